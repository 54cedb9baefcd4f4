"""One clip's tracking BlazePose, shared by the modalities that track the dancer on one grid.

Pose (landmarks) and scenic (the person mask: segmentation) both track the dancer with the same
model; in one decode pass on a common grid they share one :class:`PoseTrack`, so the model runs
once per grid sample instead of twice. A modality declares that it takes part (its record's
``shares``, :data:`KIND`) and keys its track by its grid and :class:`~pipeline.blazepose.settings.TrackSettings`
(:func:`shared_run`); the extraction loop warns once per build when two such keys differ.
"""

from __future__ import annotations

import dataclasses
import sys
from types import ModuleType

import numpy as np

from pipeline.blazepose.backends import BlazePose, TorchBlazePose, Tracked, open_blazepose
from pipeline.blazepose.settings import BATCHING, Batching, TrackSettings
from pipeline.core.decode import DecodeParams, PassShared, SharedRun, target_size

KIND = "BlazePose"  # the per-clip run the tracking modalities share (SharedRun.kind, Modality.shares)
HINT = (
    "give the modalities that track the dancer the same grid (fps, longer side, no end_s), the same "
    "detection and tracking confidences and the same backend, so that they share one BlazePose run"
)


class PoseTrack:
    """One clip's tracking BlazePose, shared by the consumers of one grid in a decode pass.

    Each consumer joins (:meth:`join`) before the first frame, saying whether it needs the
    segmentation; the graph is built at the first :meth:`process` with the segmentation on if
    anyone asked for it. That never changes the landmarks (see
    :class:`~pipeline.blazepose.backends.BlazePose`), so a pose shard is the same whether or not
    scenic shared its pass, and scenic's mask is the same whether or not pose did: neither identity
    depends on the other. ``process(image, key)`` returns the result of the last call again when
    ``key`` (the grid sample's index) repeats. The graph is closed when the last consumer leaves
    (:meth:`leave`). ``mask_short_side`` (scenic's): the torch backend warps the mask straight to
    the image's size at that short side (:func:`pipeline.core.decode.target_size`); mediapipe's mask has
    the image's size.
    """

    def __init__(self, settings: TrackSettings, batching: Batching = BATCHING):
        self.settings, self.batching = settings, batching
        self.segmentation = False
        self.mask_short_side: int | None = None
        self._pose: BlazePose | TorchBlazePose | None = None
        self._users = 0
        self._last: tuple[object, Tracked] | None = None

    def join(self, *, segmentation: bool, mask_short_side: int | None = None) -> PoseTrack:
        if self._pose is not None and segmentation and not self.segmentation:
            raise RuntimeError("a consumer asked for the segmentation after the track started")
        if segmentation:
            if self.mask_short_side not in (None, mask_short_side):
                raise RuntimeError("two consumers asked for the segmentation at different sizes")
            self.mask_short_side = mask_short_side
        self.segmentation = self.segmentation or segmentation
        self._users += 1
        return self

    def process(self, image: np.ndarray, key: object = None) -> Tracked:
        if key is not None and self._last is not None and self._last[0] == key:
            return self._last[1]
        if self._pose is None:
            options = dataclasses.replace(self.settings.options, segmentation=self.segmentation)
            self._pose = open_blazepose(dataclasses.replace(self.settings, options=options), self.batching)
        mask_size = None
        if self.segmentation and self.mask_short_side:
            height, width = image.shape[:2]
            mask_size = target_size(width, height, DecodeParams(short_side=self.mask_short_side))
        out = self._pose.process(image, mask_size)
        self._last = (key, out)
        return out

    def leave(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._pose is not None:
            self._pose.close()
            self._pose = None


def shared_run(grid: DecodeParams, settings: TrackSettings, hint: str = HINT) -> SharedRun:
    """What a tracking modality's extractor shares: the track on ``grid`` with ``settings``
    (``hint``: what to set so that it does, when the modality knows better than :data:`HINT`)."""
    return SharedRun(KIND, (grid, settings), hint)


def pose_track(
    shared: PassShared | None,
    run: SharedRun,
    *,
    segmentation: bool,
    mask_short_side: int | None = None,
    batching: Batching = BATCHING,
) -> PoseTrack:
    """The pass's track for ``run`` (:func:`shared_run`; a new one when no pass is shared), joined."""
    settings = run.key[1]
    if shared is None:
        return PoseTrack(settings, batching).join(segmentation=segmentation, mask_short_side=mask_short_side)
    track = shared.get((KIND, *run.key), lambda: PoseTrack(settings, batching))
    return track.join(segmentation=segmentation, mask_short_side=mask_short_side)


def backend_code(backend: str) -> tuple[ModuleType, ...]:
    """The modules that compute a backend's landmarks (part of the code version of what uses them)."""
    from pipeline.blazepose import backends, settings
    from pipeline.weights import graph_modules

    own = (settings, backends, sys.modules[__name__])
    if backend == "torch":
        from pipeline.blazepose import calculators, engine

        return (*own, engine, calculators, *graph_modules())
    return own
