"""Every use of LeRobot internals in the workspace: private names, private attributes, monkeypatches.

LeRobot's public API does not reach everything this project needs (a lossless offline video encoder, a
decoded-frame cache, ONNX export of the diffusion encoder, a diffusion model with our own observation
encoder). Each such reach into LeRobot lives here, once, as a small named function or class whose
docstring says what LeRobot 0.4.4 lacks and what the 0.5 / 0.6 line offers instead, and each has a test
in test/runtime/test_lerobot_compat.py that runs it against the installed LeRobot. koch_convert,
kuavo_train and koch_runtime go through this module; nothing else names a LeRobot `_private` name.

Importing this module checks the installed LeRobot version first, so an upgrade fails here with a
message saying what to do, instead of somewhere deep inside a conversion or a training run. To move to
a new LeRobot: run test_lerobot_compat.py against it, adapt the seams below, then add its version to
SUPPORTED_LEROBOT_VERSIONS.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import datasets
import lerobot
import numpy as np
import PIL.Image
import torch
from torch import nn

SUPPORTED_LEROBOT_VERSIONS = ("0.4.4",)


class LeRobotVersionError(ImportError):
    """The installed LeRobot is not a version the seams in this module were written and tested for."""


def check_lerobot_version(installed: str | None = None) -> None:
    """Raise LeRobotVersionError unless `installed` (default: `lerobot.__version__`) is supported."""
    installed = lerobot.__version__ if installed is None else installed
    if installed not in SUPPORTED_LEROBOT_VERSIONS:
        raise LeRobotVersionError(
            f"LeRobot {installed} is installed but this workspace supports LeRobot "
            f"{', '.join(SUPPORTED_LEROBOT_VERSIONS)} only: it relies on LeRobot internals that change between "
            f"releases. Install lerobot=={SUPPORTED_LEROBOT_VERSIONS[-1]} (constraints.txt), or update "
            "koch_runtime/lerobot_compat.py for the new version (run test/runtime/test_lerobot_compat.py "
            "against it) and add it to SUPPORTED_LEROBOT_VERSIONS"
        )


# Before importing LeRobot's submodules: another version may lack the names below, and the version
# error says more than an ImportError of one of them would.
check_lerobot_version()

import lerobot.datasets.aggregate as aggregate_module  # noqa: E402
import lerobot.datasets.compute_stats as compute_stats_module  # noqa: E402
import lerobot.datasets.lerobot_dataset as lerobot_dataset_module  # noqa: E402
from lerobot.configs.types import RTCAttentionSchedule  # noqa: E402
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402
from lerobot.datasets.video_utils import StreamingVideoEncoder, _default_decoder_cache  # noqa: E402
from lerobot.policies.diffusion.modeling_diffusion import (  # noqa: E402
    DiffusionModel,
    _make_noise_scheduler,
    _replace_submodules,
)
from lerobot.policies.pi0 import modeling_pi0, processor_pi0  # noqa: E402
from lerobot.policies.rtc.configuration_rtc import RTCConfig  # noqa: E402
from lerobot.policies.utils import populate_queues  # noqa: E402
from lerobot.processor.normalize_processor import UnnormalizerProcessorStep  # noqa: E402
from lerobot.utils.constants import OBS_IMAGES  # noqa: E402
from transformers.models.gemma import modeling_gemma  # noqa: E402

from koch_runtime.observation import with_stacked_cameras  # noqa: E402

# --- policies -----------------------------------------------------------------------------------------


def make_noise_scheduler(config: Any) -> Any:
    """The diffusers DDPM / DDIM scheduler a LeRobot DiffusionConfig (or subclass) describes.

    LeRobot 0.4.4 builds it with the private `modeling_diffusion._make_noise_scheduler`; the ONNX
    runtime's host-side denoising loop and the rgbd_diffusion model need exactly the same scheduler.
    0.5 and 0.6 keep the function private (same name and arguments); the public alternative is to build
    diffusers' DDPMScheduler / DDIMScheduler here from the config fields.
    """
    return _make_noise_scheduler(
        config.noise_scheduler_type, num_train_timesteps=config.num_train_timesteps,
        beta_start=config.beta_start, beta_end=config.beta_end, beta_schedule=config.beta_schedule,
        clip_sample=config.clip_sample, clip_sample_range=config.clip_sample_range,
        prediction_type=config.prediction_type,
    )


def replace_submodules(
    root: nn.Module, predicate: Callable[[nn.Module], bool], replace: Callable[[nn.Module], nn.Module]
) -> nn.Module:
    """`root` with every submodule matching `predicate` replaced by `replace(submodule)` (the
    BatchNorm -> GroupNorm swap of LeRobot's diffusion vision backbone).

    LeRobot 0.4.4 has it only as the private `modeling_diffusion._replace_submodules`; 0.5 and 0.6
    still do (vqbet keeps a private copy too). A plain walk over `named_modules` would replace it.
    """
    return _replace_submodules(root, predicate, replace)


class EncoderDiffusionModel(DiffusionModel):
    """LeRobot's DiffusionModel (noise scheduler, training loss, sampling loop) with the observation
    encoder a subclass supplies as `encode_observations(batch) -> (B, global_cond_dim)`.

    LeRobot 0.4.4's compute_loss and generate_actions get their conditioning from the private method
    `_prepare_global_conditioning`, with no public hook for another encoder: this class overrides it.
    0.5 and 0.6 keep the same private method, called the same way.
    """

    def encode_observations(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define encode_observations(batch)")

    def _prepare_global_conditioning(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encode_observations(batch)


def global_conditioning(diffusion: DiffusionModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The conditioning vector `diffusion` (a LeRobot DiffusionModel) computes for an observation history.

    The ONNX export traces it as the encoder graph. LeRobot 0.4.4 computes it only in the private
    `_prepare_global_conditioning` (0.5 and 0.6 too); there is no public encoder entry point.
    """
    return diffusion._prepare_global_conditioning(batch)


def push_observation_history(policy: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Push one observation into a LeRobot policy's history, as its select_action would, and return the
    batch in the layout its predict_action_chunk reads (diffusion: every camera stacked under
    `observation.images`). Policies without a history come back unchanged.

    LeRobot 0.4.4 policies with an n_obs_steps history (diffusion) keep it in the private `_queues`, and
    only select_action fills it, which also pops a single action from its own action queue; the
    runtimes predict a whole chunk, so they fill the history themselves. 0.5 and 0.6 keep `_queues`
    (still private, still filled only by select_action).
    """
    queues = getattr(policy, "_queues", None)
    if queues is None:
        return batch
    if OBS_IMAGES in queues:  # LeRobot's diffusion keeps every camera stacked in one queue
        batch = with_stacked_cameras(batch, policy.config)
    policy._queues = populate_queues(queues, batch)
    return batch


# --- datasets -----------------------------------------------------------------------------------------


def needs_embedding(feature: Any) -> bool:
    """True if a (nested) `datasets` feature stores files that `embed_table_storage` would embed."""
    if isinstance(feature, dict):
        return any(needs_embedding(f) for f in feature.values())
    inner = getattr(feature, "feature", None)  # List / LargeList / Sequence
    return needs_embedding(inner) if inner is not None else hasattr(feature, "embed_storage")


@contextlib.contextmanager
def embedding_only_for_image_columns() -> Iterator[None]:
    """While open, LeRobotDataset.save_episode skips `embed_images` for tables with no image column.

    `embed_images` is a per-row `datasets.map` that copies image files into the table; it costs about a
    second of CPU per few hundred frames even when, as in the converter, no column holds an image
    (colour images are videos), and on a busy host that second comes out of the video encoders' share;
    where a column does hold images (depth maps) it runs without its per-episode progress bar.
    LeRobot 0.4.4 calls it unconditionally from `_save_episode_data` with no switch, so
    this swaps the name `lerobot.datasets.lerobot_dataset.embed_images` (a monkeypatch, process-wide
    while open). 0.6 moved the call into `lerobot.datasets.dataset_writer` (imported there from
    `io_utils`), still unconditional: the patch target would move with it.
    """
    embed_images = lerobot_dataset_module.embed_images

    def embed_when_needed(dataset: Any) -> Any:
        if not needs_embedding(dataset.features):
            return dataset
        shown = datasets.utils.is_progress_bar_enabled()
        datasets.utils.disable_progress_bars()  # a "Map:" bar per episode would print under the converter's
        try:
            return embed_images(dataset)
        finally:
            if shown:
                datasets.utils.enable_progress_bars()

    lerobot_dataset_module.embed_images = embed_when_needed
    try:
        yield
    finally:
        lerobot_dataset_module.embed_images = embed_images


def is_depth_map(feature: Mapping[str, Any]) -> bool:
    """A dataset feature holding a depth map (LeRobot 0.6's `info.is_depth_map`, which the converter writes)."""
    return bool((feature.get("info") or {}).get("is_depth_map"))


@contextlib.contextmanager
def depth_map_statistics() -> Iterator[None]:
    """While open, LeRobotDataset.save_episode computes depth maps' statistics in their own unit.

    LeRobot 0.4.4's `compute_episode_stats` reads every image feature's files as 8-bit RGB and divides by
    255, which clips a 16-bit millimetre map and gives it three channels. 0.6 computes depth-map stats
    without the scaling, in the map's `depth_unit` (`datasets/compute_stats.py`); this does the same for
    `is_depth_map` features: (1, 1, 1) statistics in millimetres over LeRobot's usual frame sample; and
    since 0.4.4's `aggregate_stats` insists that every key containing "image" has (3, 1, 1) statistics,
    its shape check skips one-channel ones. It swaps the names `compute_episode_stats` in
    `lerobot.datasets.lerobot_dataset` and `_assert_type_and_shape` in `lerobot.datasets.compute_stats`
    (monkeypatches, process-wide while open); 0.6 needs neither.
    """
    original = lerobot_dataset_module.compute_episode_stats
    original_check = compute_stats_module._assert_type_and_shape

    def one_channel(stats: dict[str, np.ndarray]) -> bool:
        return all(np.shape(v) == (1, 1, 1) for k, v in stats.items() if k != "count")

    def check_all_but_depth_maps(stats_list: list[dict[str, dict]]) -> None:
        original_check([{k: v for k, v in stats.items() if not one_channel(v)} for stats in stats_list])

    def with_depth_maps(episode_data: dict[str, Any], features: dict[str, Any],
                        quantile_list: list[float] | None = None) -> dict[str, Any]:
        depth = {k for k in episode_data if k in features and is_depth_map(features[k])}
        stats = original({k: v for k, v in episode_data.items() if k not in depth},
                         {k: f for k, f in features.items() if k not in depth}, quantile_list)
        for key in depth:
            paths = episode_data[key]
            maps = np.stack([np.asarray(PIL.Image.open(paths[i]), dtype=np.float64)[None]
                             for i in compute_stats_module.sample_indices(len(paths))])
            key_stats = compute_stats_module.get_feature_stats(maps, axis=(0, 2, 3), keepdims=True,
                                                              quantile_list=quantile_list)
            stats[key] = {k: v if k == "count" else np.squeeze(v, axis=0) for k, v in key_stats.items()}
        return stats

    lerobot_dataset_module.compute_episode_stats = with_depth_maps
    compute_stats_module._assert_type_and_shape = check_all_but_depth_maps
    try:
        yield
    finally:
        lerobot_dataset_module.compute_episode_stats = original
        compute_stats_module._assert_type_and_shape = original_check


@contextlib.contextmanager
def aggregate_without_progress_bars() -> Iterator[None]:
    """While open, LeRobot's `aggregate_datasets` shows no progress bars of its own.

    The converter shows one bar for its joining stage; LeRobot's (meta data checked, files copied)
    would print under it. LeRobot 0.4.4 has no switch for them, so this swaps the `tqdm` module that
    `lerobot.datasets.aggregate` imported for one whose `tqdm` is disabled (a monkeypatch, process-wide
    while open), and turns off the `datasets` library's bars (the parquet files it reads and writes).
    0.6 still calls `tqdm.tqdm` there unconditionally.
    """
    shown = aggregate_module.tqdm
    datasets_bars = datasets.utils.is_progress_bar_enabled()
    aggregate_module.tqdm = types.SimpleNamespace(tqdm=functools.partial(shown.tqdm, disable=True))
    datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        aggregate_module.tqdm = shown
        if datasets_bars:
            datasets.utils.enable_progress_bars()


class LosslessStreamingEncoder(StreamingVideoEncoder):
    """LeRobot's streaming video encoder that never drops a frame and does not copy it.

    LeRobot's was written for live capture, where a full queue means the camera must not wait: after
    0.1 s it drops the frame and logs a warning. Offline there is no deadline, and a dropped frame would
    leave the video shorter than the parquet rows, so this one waits instead. LeRobot's also copies
    every frame in case a camera driver reuses its buffer; the converter's frames are fresh arrays that
    nothing writes, so they are queued as they are. LeRobot 0.4.4 offers neither as an option, so this
    overrides `feed_frame` with the encoder's private state (`_episode_active`, `_threads`,
    `_frame_queues`); `create(encoder_queue_maxsize=...)` only deepens the queue. 0.6 keeps the same
    private state and the same drop-after-0.1 s behaviour.
    """

    def feed_frame(self, video_key: str, image: np.ndarray) -> None:
        if not self._episode_active:
            raise RuntimeError("no active episode: call start_episode() first")
        frame = np.ascontiguousarray(image)
        while True:
            if not self._threads[video_key].is_alive():
                raise RuntimeError(f"the video encoder for {video_key} stopped; see the log above")
            try:
                self._frame_queues[video_key].put(frame, timeout=0.5)
                return
            except queue.Full:
                continue


def lossless_encoder(encoder: StreamingVideoEncoder) -> LosslessStreamingEncoder:
    """A LosslessStreamingEncoder with `encoder`'s settings (codec, pixel format, GOP, CRF, threads)."""
    return LosslessStreamingEncoder(
        fps=encoder.fps, vcodec=encoder.vcodec, pix_fmt=encoder.pix_fmt, g=encoder.g, crf=encoder.crf,
        preset=encoder.preset, queue_maxsize=encoder.queue_maxsize, encoder_threads=encoder.encoder_threads,
    )


def use_lossless_streaming_encoder(dataset: LeRobotDataset) -> None:
    """Make a dataset created with `streaming_encoding=True` encode through a LosslessStreamingEncoder.

    LeRobot 0.4.4 builds its encoder inside `LeRobotDataset.create` and keeps it in the private
    `_streaming_encoder`, with no way to pass another; this swaps it before the first frame. 0.6 builds
    it in the (private, static) `LeRobotDataset._build_streaming_encoder` and keeps it on the dataset's
    writer (`DatasetWriter._streaming_encoder`).
    """
    if dataset._streaming_encoder is not None:
        dataset._streaming_encoder = lossless_encoder(dataset._streaming_encoder)


def load_hf_dataset(dataset: LeRobotDataset) -> Any:
    """The dataset's parquet table (`hf_dataset`), loaded now if LeRobot deferred it.

    LeRobot 0.4.4 loads the table lazily on the first item, through the private
    `_ensure_hf_dataset_loaded`; the frame cache reads the episode and timestamp columns before any
    item. 0.6 moves reading into `lerobot.datasets.dataset_reader.DatasetReader` (`dataset.reader`,
    with `try_load` / `load_and_activate`).
    """
    dataset._ensure_hf_dataset_loaded()
    return dataset.hf_dataset


def clear_video_decoder_cache() -> None:
    """Close the video decoders LeRobot's `decode_video_frames` keeps open in this process.

    Decoders opened in the main process must not leak into forked DataLoader workers (LeRobot warns of
    segmentation faults). LeRobot 0.4.4 caches them in the module-private
    `video_utils._default_decoder_cache`, with no public way to release them; 0.6 still does.
    """
    _default_decoder_cache.clear()


class FrameSourceDataset(LeRobotDataset):
    """A LeRobotDataset whose video frames come from `video_frames(query_timestamps, ep_idx)`, a method
    subclasses define (same arguments and result as LeRobot's own video query).

    Everything else (timestamps, padding, history windows) stays LeRobot's own code. LeRobot 0.4.4 has
    no hook for where frames come from but its private `_query_videos`, which this overrides. 0.6 moves
    the method to `lerobot.datasets.dataset_reader.DatasetReader._query_videos` (still private) and adds
    `return_uint8` reading.
    """

    def video_frames(self, query_timestamps: dict[str, list[float]], ep_idx: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must define video_frames(query_timestamps, ep_idx)")

    def _query_videos(self, query_timestamps: dict[str, list[float]], ep_idx: int) -> dict[str, torch.Tensor]:
        return self.video_frames(query_timestamps, ep_idx)


def enable_rtc(policy: Any, execution_horizon: int) -> None:
    """Turn on Real-Time Chunking's guided denoising in a flow-matching policy (SmolVLA, pi0) after loading.

    LeRobot 0.4.4 builds the RTC processor from `config.rtc_config` in the policy's constructor (None in
    every saved config); `init_rtc_processor` re-reads it and hands it to the model. 0.6 keeps the names and
    adds `supports_rtc()` and a background `RTCInferenceEngine` (lerobot.rollout.inference.rtc).
    """

    policy.config.rtc_config = RTCConfig(enabled=True, execution_horizon=execution_horizon,
                                         prefix_attention_schedule=RTCAttentionSchedule.EXP)
    policy.init_rtc_processor()


def normalize_actions(postprocessor: Any, actions: torch.Tensor) -> torch.Tensor:
    """Robot-unit actions into the model's normalised action space: the inverse of the postprocessor's
    unnormaliser, which RTC's prefix (`prev_chunk_left_over`) must be in. LeRobot 0.4.4 has no public
    inverse; its normaliser mixin's `_normalize_action(inverse=False)` is that map (same in 0.6)."""

    step = next((s for s in postprocessor.steps if isinstance(s, UnnormalizerProcessorStep)), None)
    if step is None:
        return actions
    normalized: torch.Tensor = step._normalize_action(actions, inverse=False)
    return normalized


# --- pi0 on stock transformers ------------------------------------------------------------------------
#
# LeRobot 0.4.4's pi0 is written against openpi's patched transformers 4.53.2 (the `fix/lerobot_openpi`
# branch, not on PyPI; LeRobot 0.5+ installs it as the `lerobot[pi]` extra). For pi0 (not pi0.5, whose
# adaptive RMSNorm needs the patch's extra weights) the patch differs from stock transformers in five
# behaviours, which the functions below give pi0's model instance, and nothing else in the process:
#   1. GemmaRMSNorm called with `cond=` returns (output, gate); the gate is None without adaRMS.
#   2. `modeling_gemma._gated_residual(x, y, gate)`: x + y without a gate.
#   3. GemmaModel.forward does not scale its input embeddings by sqrt(hidden) (pi0 scales the language
#      embeddings itself; the joint training path never goes through GemmaModel.forward, so without this
#      training and inference would see differently scaled inputs).
#   4. With `use_cache=False` a given KV cache is read, not extended: the denoising steps each attend to
#      the prefix only (stock transformers appends every step's keys to the cache).
#   5. PaliGemma's image features are not divided by sqrt(hidden).
# One fix besides: LeRobot sizes the image projection for gemma_2b (2048 wide) whatever
# `paligemma_variant` says, so the smallest variant (gemma_300m, 1024) fails at its first step; the
# projection goes to the text model's width here, as in openpi's JAX pi0 (`num_classes=width`).
# pi0's constructor refuses to run unless `transformers.models.siglip.check` (a module only the patch
# has) says the patch is installed; that module exists here for the duration of the constructor and
# answers whether this adaptation is in place. test_lerobot_compat.py checks that the training path and
# the cached inference path of an adapted pi0 predict the same velocity.

_NO_COND = object()


class Pi0AdaptationError(ValueError):
    """pi0.5's adaptive RMSNorm was asked of a model adapted for pi0 only."""


def _rms_norm_with_gate(norm: Any, x: torch.Tensor, cond: Any = _NO_COND) -> Any:
    output = type(norm).forward(norm, x)
    if cond is _NO_COND:  # transformers' own layers
        return output
    if cond is not None:
        raise Pi0AdaptationError("adaptive RMSNorm conditioning (pi0.5) needs openpi's patched transformers")
    return output, None


def _gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    if gate is not None:
        raise Pi0AdaptationError("a gated residual (pi0.5) needs openpi's patched transformers")
    return x + y


def _gemma_forward_unscaled(model: Any, *args: Any, inputs_embeds: torch.Tensor,
                            adarms_cond: torch.Tensor | None = None, past_key_values: Any = None,
                            use_cache: bool | None = None, **kwargs: Any) -> Any:
    if adarms_cond is not None:
        raise Pi0AdaptationError("adaptive RMSNorm conditioning (pi0.5) needs openpi's patched transformers")
    # Stock forward multiplies by this normaliser: divide first (exact for a power-of-two width).
    normalizer = torch.tensor(model.config.hidden_size**0.5, dtype=inputs_embeds.dtype)
    read_only = past_key_values is not None and not use_cache
    prefix_length = past_key_values.get_seq_length() if read_only else 0
    output = type(model).forward(model, *args, inputs_embeds=inputs_embeds / normalizer,
                                 past_key_values=past_key_values, use_cache=use_cache, **kwargs)
    if read_only:
        past_key_values.crop(prefix_length)
    return output


def _image_features_unscaled(paligemma: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    features: torch.Tensor = paligemma.multi_modal_projector(paligemma.vision_tower(pixel_values).last_hidden_state)
    return features


def adapt_pi0_model(paligemma_with_expert: Any) -> None:
    """Give one pi0 PaliGemmaWithExpertModel the behaviours of openpi's patched transformers (above)."""
    for module in paligemma_with_expert.modules():
        if isinstance(module, modeling_gemma.GemmaRMSNorm):
            module.forward = functools.partial(_rms_norm_with_gate, module)  # type: ignore[method-assign]
    paligemma = paligemma_with_expert.paligemma
    width = paligemma.config.text_config.hidden_size
    projector = paligemma.model.multi_modal_projector.linear
    if projector.out_features != width:
        paligemma.config.vision_config.projection_dim = width
        paligemma.model.multi_modal_projector.linear = nn.Linear(
            projector.in_features, width, bias=projector.bias is not None, dtype=projector.weight.dtype)
    for gemma in (paligemma.model.language_model, paligemma_with_expert.gemma_expert.model):
        gemma.forward = functools.partial(_gemma_forward_unscaled, gemma)
    paligemma.model.get_image_features = functools.partial(_image_features_unscaled, paligemma.model)


@contextlib.contextmanager
def _transformers_check_module() -> Iterator[None]:
    name = "transformers.models.siglip.check"
    module = types.ModuleType(name, "pi0's transformers check, answered by koch_runtime.lerobot_compat")
    module.check_whether_transformers_replace_is_installed_correctly = (  # type: ignore[attr-defined]
        lambda: getattr(modeling_gemma, "_gated_residual", None) is _gated_residual)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        yield
    finally:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous


_stock_pi0_init = modeling_pi0.PI0Pytorch.__init__


def _adapted_pi0_init(self: Any, *args: Any, **kwargs: Any) -> None:
    with _transformers_check_module():
        _stock_pi0_init(self, *args, **kwargs)
    adapt_pi0_model(self.paligemma_with_expert)


def run_pi0_on_stock_transformers() -> None:
    """Make every pi0 model built from now on run on the installed (stock) transformers. Idempotent."""
    setattr(modeling_gemma, "_gated_residual", _gated_residual)  # noqa: B010 (a name only the patch has)
    setattr(modeling_pi0.PI0Pytorch, "__init__", _adapted_pi0_init)  # noqa: B010


@contextlib.contextmanager
def pi0_tokenizer_from(folder: str) -> Iterator[None]:
    """Build pi0's processors with the tokenizer in the local `folder`. LeRobot 0.4.4's
    `make_pi0_pre_post_processors` names `google/paligemma-3b-pt-224` (a download) with no parameter for
    another; 0.6 is the same. The saved pipeline records `folder`; loading overrides it."""
    stock = processor_pi0.TokenizerProcessorStep

    def local_tokenizer(**kwargs: Any) -> Any:
        return stock(**{**kwargs, "tokenizer_name": folder})

    processor_pi0.TokenizerProcessorStep = local_tokenizer
    try:
        yield
    finally:
        processor_pi0.TokenizerProcessorStep = stock
