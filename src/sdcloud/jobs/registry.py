"""The job kinds a process knows: kind name -> handler factory, plus how the queue runs them.

A kind is registered once (``builtin_kinds`` lists sdcloud's own); every process that runs
jobs (``sdcloud serve``, ``sdcloud generate``, a ``sdcloud worker``) builds its handlers from
the same registry with ``build(runtime)``, so a job submitted on one machine runs the same
code on another. The factory receives the composition root (``sdcloud.runtime.Runtime``) and
returns the handler, a callable ``(JobContext) -> dict`` (docs/architecture.md, "The job
contract").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sdcloud.jobs.base import Handler

GPU_LANE = "gpu"
"""The default lane: generation, model switches and the checkpoint tools run here one at a time."""

HandlerFactory = Callable[[Any], Handler]


@dataclass(frozen=True)
class JobKind:
    """One kind of job.

    ``lane``: jobs of one lane run one at a time, FIFO; different lanes run side by side (a
    long training run in its own lane lets generation jobs run between its steps, through the
    GPU owner's priorities). ``max_attempts``: runs in all, counting the retries after a
    crash; a resumable kind (one that picks up from ``JobContext.state_dir``) can allow more.
    """

    name: str
    factory: HandlerFactory
    lane: str = GPU_LANE
    max_attempts: int = 2

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"job kind name '{self.name}' must be letters, digits, '-' or '_'")
        if self.max_attempts < 1:
            raise ValueError(f"job kind '{self.name}': max_attempts must be at least 1")


class JobKinds:
    """An ordered set of ``JobKind``; ``register`` refuses a name twice."""

    def __init__(self, kinds: Iterable[JobKind] = ()) -> None:
        self._kinds: dict[str, JobKind] = {}
        for kind in kinds:
            self.register(kind)

    def register(self, kind: JobKind) -> None:
        if kind.name in self._kinds:
            raise ValueError(f"job kind '{kind.name}' is already registered")
        self._kinds[kind.name] = kind

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[JobKind]:
        return iter(self._kinds.values())

    def __getitem__(self, name: str) -> JobKind:
        return self._kinds[name]

    def names(self) -> list[str]:
        return list(self._kinds)

    def build(self, runtime: Any) -> dict[str, Handler]:
        """One handler per kind; kinds sharing a factory share one handler object."""
        made: dict[int, Handler] = {}
        handlers: dict[str, Handler] = {}
        for kind in self._kinds.values():
            key = id(kind.factory)
            if key not in made:
                made[key] = kind.factory(runtime)
            handlers[kind.name] = made[key]
        return handlers


def _generation(runtime: Any) -> Handler:
    from sdcloud.jobs.generation import GenerationRunner

    return GenerationRunner(runtime.settings, runtime.host, on_saved=runtime.on_saved,
                            observers=runtime.generation_observers, on_image=getattr(runtime, "on_image", None))


def _checkpoint_tools(runtime: Any) -> Handler:
    from sdcloud.jobs.ckpt import CheckpointRunner

    return CheckpointRunner(runtime.settings, runtime.catalog, runtime.hashes, on_output=runtime.refresh,
                            gpu=runtime.gpu)


def _training(runtime: Any) -> Handler:
    from sdcloud.jobs.training import TrainRunner

    return TrainRunner(runtime.settings, store=runtime.persistence.store, gpu=runtime.gpu, on_output=runtime.refresh)


def builtin_kinds() -> JobKinds:
    """sdcloud's own kinds. Add a new kind here (or ``register`` it on the runtime's registry)."""
    from sdcloud.jobs.ckpt import KINDS as CKPT_KINDS

    return JobKinds([
        JobKind("txt2img", _generation),
        JobKind("img2img", _generation),
        *(JobKind(name, _checkpoint_tools) for name in CKPT_KINDS),
        JobKind("train-lora", _training, lane="train", max_attempts=5),
    ])
