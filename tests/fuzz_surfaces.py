"""Generators of hostile input on the surfaces added after the ONNX and CNN-design fuzz
(tests/fuzzing.py): Hugging Face configs of every family read, mutated (type swaps, out-of-range
values, deletions, deep nesting, huge lists, other tops), under estimate, serve, plan and train;
transformer designs mutated; plan strategies and serve options drawn from their grammar with odd
values; and control flow made malformed. Judged by tests/fuzzing.py's oracle: no traceback, no hang,
no negative or non-finite number, every error one line naming the file or the flag.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import fuzzing
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "tests" / "fixtures" / "hf_configs").glob("*.json"))
           if p.stem != "transformers_counts"}
FIELDS = ["hidden_size", "n_embd", "intermediate_size", "n_inner", "head_dim", "num_attention_heads", "n_head",
          "num_key_value_heads", "num_hidden_layers", "n_layer", "vocab_size", "max_position_embeddings",
          "n_positions", "sliding_window", "layer_types", "rotary_pct", "partial_rotary_factor", "torch_dtype",
          "hidden_act", "activation_function", "tie_word_embeddings", "num_local_experts", "num_experts",
          "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size", "decoder_sparse_step",
          "mlp_only_layers", "first_k_dense_replace", "q_lora_rank", "kv_lora_rank", "qk_rope_head_dim",
          "n_shared_experts", "shared_expert_intermediate_size", "use_sliding_window", "max_window_layers",
          "model_type", "text_config", "type_vocab_size", "attention_bias"]
HOSTILE = [0, -1, -5, 1, 3, 1.5, "x", "", None, True, [], {}, [[1]], [1, 2], 2 ** 31, 2 ** 63, 10 ** 7, math.nan,
           math.inf, -math.inf, 1e300, "float8", "llama", ["sliding_attention"] * 3]
SMALL_DESIGN = "TOKENS[64] -> EMBED-1000x64 -> [LN -> ATTN-4h -> LN -> MLP-256]*4 -> LN -> LMHEAD-1000"
ODD_INTS = ["0", "-1", "1", "2", "3", "7", "64", "1000000", "1099511627776", "nan", "x", ""]
ODD_FRACTIONS = ["0", "0.5", "0.9", "1", "1.5", "-0.1", "nan", "inf", "x"]


def mutate_config(rng: random.Random) -> object:
    """A family's config with one hostile change."""
    cfg = dict(rng.choice(list(CONFIGS.values())))
    kind = rng.randrange(6)
    if kind == 0:
        cfg[rng.choice(FIELDS)] = rng.choice(HOSTILE)
    elif kind == 1:
        cfg.pop(rng.choice([k for k in cfg if k in FIELDS] or ["model_type"]), None)
    elif kind == 2:  # a width or count scaled far out
        key = rng.choice([k for k in FIELDS if isinstance(cfg.get(k), int) and not isinstance(cfg.get(k), bool)]
                         or ["hidden_size"])
        cfg[key] = int(cfg.get(key) or 1) * rng.choice([0, -1, 7, 1000, 10 ** 6])
    elif kind == 3:
        cfg[rng.choice(FIELDS)] = rng.choice([["sliding_attention"] * 200_000, list(range(100_000)), "x" * 100_000])
    elif kind == 4:
        return rng.choice([[], 3, "llama", None, True, [cfg]])
    else:  # a multimodal wrapper around it, or around garbage
        return {"model_type": "gemma3", "torch_dtype": "bfloat16",
                "text_config": rng.choice([cfg, None, [], 7, {**cfg, "sliding_window": rng.choice(HOSTILE)}])}
    return cfg


def config_command(rng: random.Random, path: Path) -> list[str]:
    command = rng.choice(["estimate", "serve", "plan", "train"])
    sequence = ["--dim", f"sequence={rng.choice(['16', '4096', '0', '1099511627776'])}"]
    if command == "estimate":
        return ["estimate", str(path), *sequence, "--format", "json"]
    if command == "serve":
        args = ["fit", str(path), "--mode", "serve", "--gpu", rng.choice(["A100-80GB", "H100-80GB", "T4"]),
                "--context", rng.choice(["16", "4096", "131072"])]
        if rng.random() < 0.3:
            args += ["--tp", rng.choice(["2", "3", "8"])]
        return [*args, "--format", "json"]
    if command == "plan":
        return ["plan", str(path), "--gpu", "H100-80GB", "--gpus", rng.choice(["1", "4", "8"]), *sequence[:1],
                "sequence=128", "--format", "json"]
    return ["fit", str(path), "--mode", "train", "--gpu", "A100-80GB", "--dim", "sequence=128", "--format", "json"]


def strategy(rng: random.Random) -> str:
    """A --strategy string from the grammar's words, with odd degrees and the odd unknown word."""
    n = lambda: rng.choice(["0", "1", "2", "3", "4", "8", "1000000", "-1", ""])  # noqa: E731
    ckpt = ['none', 'full', 'selective', 'op', f'every{n()}', 'planned', 'x']
    words = [f"dp{n()}", f"tp{n()}", f"pp{n()}", f"cp{n()}", "sp", f"zero{n()}", f"hybrid{n()}", "1f1b", "gpipe",
             f"interleaved x{n()}", f"micro{n()}", f"ckpt={rng.choice(ckpt)}",
             f"offload={rng.choice(['optimizer', 'params', 'x'])}", f"balance={rng.choice(['memory', 'compute', 'x'])}",
             f"engine={rng.choice(['pytorch', 'deepspeed', 'megatron', 'x'])}", "bogus", "", "dp2 dp2"]
    return " ".join(rng.sample(words, rng.randint(0, 4)))


def plan_command(rng: random.Random) -> list[str]:
    model = SMALL_DESIGN
    if rng.random() < 0.3:  # a config, whose sequence context parallelism splits and Megatron-LM's estimate reads
        config = ROOT / "tests" / "fixtures" / "hf_configs" / f"{rng.choice(list(CONFIGS))}.json"
        model = str(config)
    args = ["plan", model, "--gpu", "H100-80GB", "--gpus", rng.choice(["1", "2", "8", "16", "0", "720720"])]
    if model != SMALL_DESIGN:
        args += ["--dim", f"sequence={rng.choice(['16', '64', '7', '0'])}"]
    if rng.random() < 0.7:
        args += ["--strategy", strategy(rng)]
    if rng.random() < 0.1:
        args.append("--largest-model")
    for flag, values in (("--nodes", ["1", "2", "3", "0"]), ("--global-batch", ODD_INTS),
                         ("--micro-batches", ODD_INTS), ("--units", [r"layer", r"(", r"", r"(([a-z_/.0-9]+)+)+Q"])):
        if rng.random() < 0.2:
            args += [flag, rng.choice(values)]
    return [*args, "--format", "json"]


def serve_command(rng: random.Random) -> list[str]:
    config = ROOT / "tests" / "fixtures" / "hf_configs" / f"{rng.choice(list(CONFIGS))}.json"
    args = ["fit", str(config), "--mode", "serve", "--gpu", rng.choice(["A100-80GB", "H100-80GB", "T4", "H200"])]
    options = {"--context": ODD_INTS, "--sequences": ODD_INTS, "--tp": ["1", "2", "3", "4", "64", "0", "-1"],
               "--kv-dtype": ["fp8", "int8", "fp16", "int4", "x"], "--gpu-memory-utilization": ODD_FRACTIONS,
               "--block-size": ["16", "17", "0", "-16", "1000000"], "--max-num-batched-tokens": ODD_INTS,
               "--max-num-seqs": ODD_INTS, "--non-torch": ["1GiB", "-1GiB", "0", "nan", "x"],
               "--engine": ["v0", "v1", "v2"], "--serve-runtime": ["vllm", "plain", "x"]}
    if rng.random() < 0.8:
        args += ["--context", rng.choice(ODD_INTS)]
    for flag in rng.sample(list(options), rng.randint(0, 3)):
        args += [flag, rng.choice(options[flag])]
    return [*args, "--format", "json"]


def control_flow_model(rng: random.Random) -> onnx.ModelProto:
    """An If or a Loop whose condition, trip count, branches or body names are made wrong."""
    f = TensorProto.FLOAT

    def body(name: str, src: str, out: str, inputs=()) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Relu", [src], [out])], name, list(inputs),
                                 [helper.make_tensor_value_info(out, f, None)])

    cond = rng.choice([np.array(True), np.zeros([0], bool), np.array([True, False]), np.array(1.5, np.float32),
                       None])
    inits = [numpy_helper.from_array(cond, "c")] if cond is not None else []
    src = lambda: rng.choice(["x", "x", "nope", "", "c"])  # noqa: E731
    if rng.random() < 0.5:
        node = helper.make_node("If", [rng.choice(["c", "c", "", "x", "nope"])], ["y"],
                                then_branch=body("t", src(), "a"), else_branch=body("e", src(), "b"))
    else:
        inits.append(numpy_helper.from_array(np.array(rng.choice([0, 3, -1, 2 ** 40]), np.int64), "n"))
        loop_body = helper.make_graph(
            [helper.make_node("Identity", [rng.choice(["cin", "nope"])], ["cout"]),
             helper.make_node("Relu", [rng.choice(["s", "x", "nope"])], ["s2"])], "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cin", TensorProto.BOOL, []), helper.make_tensor_value_info("s", f, None)],
            [helper.make_tensor_value_info("cout", TensorProto.BOOL, []), helper.make_tensor_value_info("s2", f, None)])
        node = helper.make_node("Loop", [rng.choice(["n", "", "nope"]), rng.choice(["", "c"]), "x"], ["y"],
                                body=loop_body)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", f, [1, 4])],
                              [helper.make_tensor_value_info("y", f, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def run_case(kind: str, rng: random.Random, folder: Path) -> tuple[list[str], str | None]:
    """Make one case of ``kind`` and judge it: (the command line, what went wrong or None)."""
    if kind == "config":
        path = folder / "config.json"
        path.write_text(json.dumps(mutate_config(rng)))
        args = config_command(rng, path)
        return args, fuzzing.judge(args, path.name)
    if kind == "design":
        text = fuzzing.mutate_design(rng.choice([SMALL_DESIGN, *(t for n, t in fuzzing.DESIGNS.items()
                                                                 if "TOKENS" in t)]), rng)
        path = folder / "design.arch"
        path.write_text(text, encoding="utf-8")
        extra = rng.choice([["--dim", "sequence=64"], ["--mode", "train"], []])
        args = ["estimate", str(path), *extra, "--format", "json"]
        return args, fuzzing.judge(args, path.name)
    if kind == "control":
        path = folder / "control.onnx"
        onnx.save(control_flow_model(rng), str(path))
        args = ["estimate", str(path), "--format", "json"]
        return args, fuzzing.judge(args, path.name)
    args = plan_command(rng) if kind == "plan" else serve_command(rng)
    return args, fuzzing.judge(args, "--")


KINDS = ("config", "design", "control", "plan", "serve")
WEIGHTS = {"config": 40, "design": 20, "control": 10, "plan": 15, "serve": 15}


def fuzz(cases: int, seed: int, kinds: tuple[str, ...] = KINDS) -> dict[str, list]:
    """``cases`` cases of ``kinds``, drawn by WEIGHTS; each kind's failures (command line, problem)."""
    return fuzzing.fuzz(cases, seed, {k: WEIGHTS[k] for k in kinds}, run_case)
