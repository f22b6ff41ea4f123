"""PyTorch's CUDA caching allocator as archcalc replays it: its rules read from
c10/cuda/CUDACachingAllocator.cpp (each case says which), the step's replay agreeing with the
planner's own account, and the reserved figure against torchtitan's published reserved memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from archcalc.analysis.memory.caching_allocator import CachingAllocator, round_size

MiB = 1 << 20


def test_requests_round_to_512_bytes_and_small_ones_share_2_mib_segments():
    a = CachingAllocator()
    assert round_size(1) == 512 and round_size(513) == 1024  # kMinBlockSize
    blocks = [a.malloc(1000) for _ in range(4096)]  # 4096 x 1024 B: two 2 MiB small segments (kSmallBuffer)
    assert a.allocated == 4096 * 1024 and a.reserved == 2 * 2 * MiB
    for b in blocks:
        a.free(b)
    a.malloc(1000)
    assert a.reserved == 4 * MiB  # cached, not returned


def test_mid_size_requests_take_a_20_mib_segment_and_split_it():
    a = CachingAllocator()
    a.malloc(3 * MiB)  # 1-10 MiB: a kLargeBuffer (20 MiB) segment, the 17 MiB rest split off
    a.malloc(3 * MiB)
    assert a.reserved == 20 * MiB and a.allocated == 6 * MiB
    a.malloc(11 * MiB)  # the cached 14 MiB rest holds it: best fit before a new segment
    assert a.reserved == 20 * MiB
    a.malloc(11 * MiB)  # >= kMinLargeAlloc, nothing cached holds it: a segment rounded up to 2 MiB (kRoundLarge)
    assert a.reserved == 20 * MiB + 12 * MiB


def test_a_large_block_is_not_split_for_a_remainder_of_1_mib_or_less():
    a = CachingAllocator()
    a.free(a.malloc(12 * MiB))
    a.malloc(11 * MiB + MiB // 2)  # remaining 0.5 MiB <= kSmallSize: handed out whole (should_split)
    assert a.allocated == 12 * MiB and a.reserved == 12 * MiB


def test_freed_blocks_serve_only_their_own_stream_and_merge_with_their_neighbours():
    a = CachingAllocator()
    x, y = a.malloc(4 * MiB), a.malloc(4 * MiB)  # one 20 MiB segment
    a.free(x)
    a.free(y)  # merged back into the whole 20 MiB block
    a.malloc(18 * MiB)
    assert a.reserved == 20 * MiB
    a.malloc(1 * MiB + 512, stream=1)  # another stream: its own segment, whatever the default caches
    assert a.reserved == 40 * MiB


def test_ddp_buckets_as_the_reducer_fills_them():
    from archcalc.analysis.plan.step_replay import ddp_buckets

    # the first bucket closes past 1 MiB, the rest past 25 MiB; a gradient is never split
    assert ddp_buckets([MiB // 2, MiB // 2, MiB, 24 * MiB, 2 * MiB]) == [MiB, 25 * MiB, 2 * MiB]


def test_expandable_segments_grow_one_segment_by_20_mib_pages():
    a = CachingAllocator(expandable_segments=True)
    first = a.malloc(4 * MiB)  # maps one 20 MiB page
    a.malloc(30 * MiB)  # the free 16 MiB at the end, and one more page
    assert a.reserved == 40 * MiB
    a.free(first)
    a.malloc(5 * MiB)  # the 4 MiB hole is too small; the 6 MiB at the end takes it
    assert a.reserved == 40 * MiB and a.allocated == 35 * MiB


LLAMA3_8B = Path(__file__).parent / "fixtures" / "published" / "llama3_8b.json"


def _planner(sequence: int):
    from archcalc.analysis.plan.planner import Planner
    from archcalc.frontends.sources import load_graph

    return Planner(load_graph(str(LLAMA3_8B)), dims={"sequence": sequence})


@pytest.mark.parametrize("sequence", [1024, 8192])
@pytest.mark.parametrize("checkpoint", ["none", "full", "op", "uniform2"])
@pytest.mark.parametrize("zero", [0, 3])
def test_the_replay_holds_what_the_planner_counts(sequence, checkpoint, zero):
    """The replay's peak of live tensors is the planner's peak, tensor for tensor (one account, two
    walks): Llama 3 8B under DDP and FSDP2 on 8 GPUs at micro-batch 2."""
    from archcalc.analysis.plan.gpu_memory import Strategy
    from archcalc.analysis.plan.reserved import replay

    planner = _planner(sequence)
    s = Strategy(dp=8, zero=zero, checkpoint=checkpoint)
    r = replay(planner, s, 2)
    assert r is not None and r.live == planner.memory(s, 2)[0].peak


# torchtitan, benchmarks/llama3_h100_202412_torchtitan.md, Tables 1 and 3: Llama 3.1 8B, FSDP, local
# batch 2, sequence 8192 (train_configs/llama3_8b.toml), selective op checkpointing, H100 96 GB, its
# logged max_reserved (torch.cuda.memory_stats "reserved_bytes.all.peak"), launched with
# expandable_segments:True (run_llama_train.sh).
@pytest.mark.parametrize("gpus, published", [(8, 82.4), (128, 67.0)])
def test_reserved_memory_of_torchtitans_fsdp_runs(gpus, published):
    from archcalc.api import plan
    from archcalc.units import parse_bytes

    result = plan(str(LLAMA3_8B), parse_bytes("95GiB"), gpus, gpus // 8, global_batch=2 * gpus,
                  strategy=f"dp{gpus} zero3 ckpt=op torchtitan", dims={"sequence": 8192})
    r = result.meta["reserved"]
    got = r["expandable_segments"]["reserved"] / 2**30
    assert result.rows[0].micro_batch == 2 and abs(got / published - 1) < 0.10, got
    assert r["expandable_segments"]["overhead"] > 0 and r["default"]["reserved"] >= result.rows[0].total


def test_torchtitan_keeps_its_last_block_gathered_into_the_backward():
    """engine=torchtitan: at the head's moment FSDP2 holds the root (embedding, final norm, head) and,
    as torchtitan's apply_fsdp leaves it unresharded, the last block: Llama 3 8B's sizes by
    transformers' count, 1,050,677,248 root parameters and 218,112,000 a layer, in bf16."""
    from archcalc.analysis.memory.terms import GATHERED_PARAMETERS
    from archcalc.analysis.plan.gpu_memory import Strategy
    from archcalc.analysis.plan.reserved import replay

    planner = _planner(8192)
    plain, titan = (planner.memory(Strategy(dp=8, zero=3, checkpoint="op", engine=e), 2)[0]
                    for e in ("pytorch", "torchtitan"))
    assert plain.terms[GATHERED_PARAMETERS] == 2 * 1_050_677_248
    assert titan.terms[GATHERED_PARAMETERS] == 2 * (1_050_677_248 + 218_112_000)
    r = replay(planner, Strategy(dp=8, zero=3, checkpoint="op", engine="torchtitan"), 2)
    assert r is not None and r.live == titan.peak


def test_a_model_returning_a_view_of_its_logits_holds_them_once():
    """gpt2-124m's head is a product then a reshape to [batch, sequence, vocabulary]: in PyTorch the
    returned tensor is a view of the product's, one buffer (onnxruntime would copy it into an output of
    its own). The planner's loss moment and the replay agree on it."""
    from archcalc.analysis.memory.step_peak import training_owners
    from archcalc.analysis.plan.gpu_memory import Strategy
    from archcalc.analysis.plan.planner import Planner
    from archcalc.analysis.plan.reserved import replay
    from archcalc.frontends.sources import load_graph

    planner = Planner(load_graph("gpt2-124m"))
    v = planner.view(1, False)
    head = v.results[-1].layer
    assert head.op_type == "Reshape"
    assert training_owners(v.shaped, v.results, v.float_dtype)[head.outputs[0]] == head.inputs[0]
    r = replay(planner, Strategy(), 4)
    assert r is not None and r.live == planner.memory(Strategy(), 4)[0].peak
