"""Multi-GPU training plans: the units a wrap, checkpoint or stage is made of (``units``), one GPU's
memory under a strategy (``gpu_memory``), tensor parallelism (``tensor_parallel``), checkpointing
and its planner (``checkpointing``), pipeline stages (``pipeline``), a rank's account at any
micro-batch (``rank_view``), the bytes each collective sends (``traffic``), the planner
(``planner``) and the strategies it weighs (``search``); DeepSpeed's own estimators (``deepspeed``)."""
