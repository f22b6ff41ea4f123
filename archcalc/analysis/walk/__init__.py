"""The walk: a graph bound to its inputs and every op's rule applied in order (``infer``), control
flow's bodies walked per iteration (``control_flow``), and what the walk records of each layer
(``results``). Every analysis above reads what the walk recorded; none walks again."""
