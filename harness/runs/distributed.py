"""Data parallel evaluation of one checkpoint: ``accelerate launch -m harness eval ...`` (or
``torchrun``) starts one process per device; each scores every ``world``-th item, and the records are
gathered back into item order, so the results equal a single-process run's.

Items are dealt out round-robin rather than in blocks: neighbouring items have similar lengths
(same subject, same few-shot header), so every process gets a like share of the work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

_T = TypeVar("_T")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# torchrun (``accelerate launch --multi_gpu``) first, then the MPI launchers that
# ``accelerate launch --cpu --num_processes N --mpirun_hostfile F`` starts: Intel MPI/MPICH, Open MPI, MVAPICH
_WORLD_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_SIZE")
_RANK_VARS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_RANK")


def _first_int(names: Sequence[str], default: int) -> int:
    for name in names:
        if os.environ.get(name):
            return int(os.environ[name])
    return default


def launched_ranks() -> Ranks:
    """This process's place in a multi-process launch, from the variables torchrun or mpirun set
    (the same ones accelerate reads); a plain run is rank 0 of 1."""
    world = _first_int(_WORLD_VARS, 1)
    rank = _first_int(_RANK_VARS, 0)
    return Ranks(rank, world) if world > 1 else Ranks()


def join(device: str) -> tuple[Ranks, str]:
    """Join the launch's process group (gloo on CPU, nccl on GPUs, through accelerate) and return
    this process's ranks and device: ``auto``/``cuda`` become this process's own GPU."""
    ranks = launched_ranks()
    if ranks.world == 1:
        return ranks, device
    import torch
    from accelerate import PartialState

    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    state = PartialState(cpu=cpu)
    if device in ("auto", "cuda"):
        device = "cpu" if cpu else str(state.device)
    return Ranks(state.process_index, state.num_processes), device


def my_indices(count: int, ranks: Ranks) -> list[int]:
    """The positions of the items this process scores."""
    return list(range(ranks.rank, count, ranks.world))


def gather_in_order(indexed: Sequence[tuple[int, _T]], ranks: Ranks) -> list[_T]:
    """Every process's (position, value) pairs, gathered on all processes and put in position order."""
    if ranks.world == 1:
        return [value for _, value in sorted(indexed, key=lambda pair: pair[0])]
    from accelerate.utils import gather_object

    everything: list[Any] = gather_object(list(indexed))
    return [value for _, value in sorted(everything, key=lambda pair: pair[0])]


def sum_over_processes(values: dict[str, int], ranks: Ranks) -> dict[str, int]:
    """Counters (tokens forwarded...) summed over all processes."""
    if ranks.world == 1:
        return dict(values)
    from accelerate.utils import gather_object

    totals: dict[str, int] = {}
    for part in gather_object([values]):
        for name, value in part.items():
            totals[name] = totals.get(name, 0) + value
    return totals
