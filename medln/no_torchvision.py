"""Image-only processors without torchvision (runtime: backbone loading calls it).

transformers 5.23 without torchvision cannot build or load a Qwen2-VL processor at all:
ProcessorMixin.__init__ requires a `video_processor` that is a `VideoProcessorMixin`, looks that
class up by name on the top-level `transformers` module (only exported when torchvision is
installed; the lookup then crashes on `VIDEO_PROCESSOR_MAPPING._extra_content`), and
`AutoVideoProcessor` is a torchvision-only dummy. There is no CPU torchvision here, so for
image-only use we stand in a video processor that refuses videos.
"""

from __future__ import annotations

import functools
from typing import Any


def _video_processor_base():
    """The class ProcessorMixin checks a video processor against: VideoProcessorMixin since
    transformers 5.19, BaseVideoProcessor before."""
    from transformers import video_processing_utils

    return getattr(video_processing_utils, "VideoProcessorMixin", None) or video_processing_utils.BaseVideoProcessor


@functools.cache
def _image_only_video_processor_class():
    class ImageOnlyVideoProcessor(_video_processor_base()):
        """Placeholder for Qwen2VLVideoProcessor when torchvision is missing; images only."""

        saved_as = "Qwen2VLVideoProcessor"

        def preprocess(self, videos, **kwargs):
            raise RuntimeError("video inputs need torchvision, which is not installed")

        def to_dict(self) -> dict[str, Any]:
            # Saved under the real class name so a machine with torchvision loads the real one.
            keys = ("patch_size", "temporal_patch_size", "merge_size")
            out = {k: getattr(self, k) for k in keys if hasattr(self, k)}
            out["video_processor_type"] = self.saved_as
            return out

    class ImageOnlyVideoLoader:
        """Replaces the dummy AutoVideoProcessor: returns the placeholder for any folder or hub id."""

        medln_stub = True

        @classmethod
        def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
            # The sizes only matter for videos, which the placeholder refuses.
            return ImageOnlyVideoProcessor(patch_size=14, temporal_patch_size=2, merge_size=2)

    return ImageOnlyVideoProcessor, ImageOnlyVideoLoader


def allow_processors_without_torchvision() -> None:
    """Let video-capable processors (Qwen2-VL) build and load for images when torchvision is absent.

    Idempotent; does nothing when torchvision is installed. Call before
    `AutoProcessor.from_pretrained` of a qwen2_vl folder or hub id.
    """
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        return
    import transformers
    from transformers.models.auto import video_processing_auto

    if getattr(video_processing_auto.AutoVideoProcessor, "medln_stub", False):
        return
    _, loader = _image_only_video_processor_class()
    base = _video_processor_base()
    setattr(transformers, base.__name__, base)
    video_processing_auto.AutoVideoProcessor = loader
