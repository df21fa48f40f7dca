"""Every seam of koch_runtime.lerobot_compat, run against the installed LeRobot (no mocks).

One test per seam: each fails if the LeRobot internal it relies on moved, was renamed or changed
behaviour, which is the signal to update lerobot_compat.py. Only these tests, besides the module
itself, may name a LeRobot private attribute, and only to observe a seam that has no public trace.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import av
import datasets
import lerobot
import lerobot.datasets.lerobot_dataset as lerobot_dataset_module
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.datasets.aggregate import aggregate_datasets
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.datasets.video_utils import StreamingVideoEncoder, decode_video_frames
from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
from lerobot.policies.diffusion.modeling_diffusion import DiffusionModel, DiffusionPolicy
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE
from synthetic_reach import SyntheticDataset
from torch import nn

from koch_runtime import lerobot_compat
from koch_runtime.lerobot_compat import (
    SUPPORTED_LEROBOT_VERSIONS,
    EncoderDiffusionModel,
    FrameSourceDataset,
    LeRobotVersionError,
    LosslessStreamingEncoder,
    Pi0AdaptationError,
    adapt_pi0_model,
    aggregate_without_progress_bars,
    check_lerobot_version,
    clear_video_decoder_cache,
    depth_map_statistics,
    embedding_only_for_image_columns,
    enable_rtc,
    global_conditioning,
    is_depth_map,
    load_hf_dataset,
    lossless_encoder,
    make_noise_scheduler,
    needs_embedding,
    normalize_actions,
    pi0_tokenizer_from,
    push_observation_history,
    replace_submodules,
    run_pi0_on_stock_transformers,
    use_lossless_streaming_encoder,
)

pytestmark = pytest.mark.video

CAMERA = "observation.images.head"


# --- the version check --------------------------------------------------------------------------------


def test_the_version_check_names_the_installed_and_supported_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    check_lerobot_version()  # the installed LeRobot is the supported one
    monkeypatch.setattr(lerobot, "__version__", "0.6.2")
    expected = r"LeRobot 0\.6\.2 is installed .* supports LeRobot 0\.4\.4 only"
    with pytest.raises(LeRobotVersionError, match=expected) as info:
        check_lerobot_version()
    assert "update koch_runtime/lerobot_compat.py" in str(info.value)
    assert isinstance(info.value, ImportError)
    with pytest.raises(LeRobotVersionError, match="LeRobot 0.5.0 is installed"):
        check_lerobot_version("0.5.0")
    check_lerobot_version(SUPPORTED_LEROBOT_VERSIONS[0])


def test_importing_the_module_with_another_lerobot_fails_before_any_internal_is_touched() -> None:
    code = ("import lerobot\nlerobot.__version__ = '0.6.2'\n"
            "import koch_runtime.lerobot_compat\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode != 0
    assert "LeRobotVersionError: LeRobot 0.6.2 is installed" in result.stderr
    assert "update koch_runtime/lerobot_compat.py" in result.stderr


# --- policies -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diffusion_config() -> DiffusionConfig:
    """A small LeRobot diffusion config: 6-D state, one 3x32x32 camera, two observation steps."""
    return DiffusionConfig(
        input_features={OBS_STATE: PolicyFeature(FeatureType.STATE, (6,)),
                        CAMERA: PolicyFeature(FeatureType.VISUAL, (3, 32, 32))},
        output_features={ACTION: PolicyFeature(FeatureType.ACTION, (6,))},
        n_obs_steps=2, horizon=8, n_action_steps=4, crop_shape=None, pretrained_backbone_weights=None,
        down_dims=(16, 32), diffusion_step_embed_dim=16, spatial_softmax_num_keypoints=8,
        num_train_timesteps=10, device="cpu",
    )


def history_batch(config: DiffusionConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A (1, n_obs_steps, ...) history in the layout LeRobot's DiffusionModel reads (cameras stacked)."""
    generator = torch.Generator().manual_seed(seed)
    steps = config.n_obs_steps
    return {OBS_STATE: torch.randn(1, steps, 6, generator=generator),
            OBS_IMAGES: torch.rand(1, steps, 1, 3, 32, 32, generator=generator)}


def test_make_noise_scheduler_builds_the_scheduler_lerobots_diffusion_trains_with(
    diffusion_config: DiffusionConfig,
) -> None:
    reference = DiffusionModel(diffusion_config).noise_scheduler
    ddpm = make_noise_scheduler(diffusion_config)
    assert type(ddpm) is DDPMScheduler is type(reference) and ddpm.config == reference.config
    ddim = make_noise_scheduler(dataclasses.replace(diffusion_config, noise_scheduler_type="DDIM"))
    assert type(ddim) is DDIMScheduler
    torch.testing.assert_close(ddim.betas, reference.betas)


def test_replace_submodules_swaps_every_match_nested_and_at_the_root() -> None:
    def to_group_norm(module: nn.Module) -> nn.Module:
        assert isinstance(module, nn.BatchNorm2d)
        return nn.GroupNorm(2, module.num_features)

    def is_batch_norm(module: nn.Module) -> bool:
        return isinstance(module, nn.BatchNorm2d)

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.ReLU(), nn.BatchNorm2d(4)))
    swapped = replace_submodules(net, is_batch_norm, to_group_norm)
    assert swapped is net
    assert [type(m) for m in swapped.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))] == [nn.GroupNorm] * 2
    assert isinstance(replace_submodules(nn.BatchNorm2d(4), is_batch_norm, to_group_norm), nn.GroupNorm)


def test_lerobots_sampling_and_loss_take_their_conditioning_from_the_encoder_hook(
    diffusion_config: DiffusionConfig,
) -> None:
    torch.manual_seed(0)
    reference = DiffusionModel(diffusion_config).eval()
    batch = history_batch(diffusion_config)
    conditioning = global_conditioning(reference, batch)
    assert conditioning.shape[0] == 1 and conditioning.ndim == 2

    class FixedEncoder(EncoderDiffusionModel):
        calls = 0

        def encode_observations(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            FixedEncoder.calls += 1
            return conditioning

    hooked = FixedEncoder(diffusion_config).eval()
    hooked.load_state_dict(reference.state_dict())
    assert torch.equal(global_conditioning(hooked, batch), conditioning)
    noise = torch.randn(1, diffusion_config.horizon, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.manual_seed(2)
        expected = reference.generate_actions(batch, noise=noise)
        torch.manual_seed(2)
        actions = hooked.generate_actions(batch, noise=noise)
    torch.testing.assert_close(actions, expected)
    training_batch = {**batch, ACTION: torch.randn(1, diffusion_config.horizon, 6),
                      "action_is_pad": torch.zeros(1, diffusion_config.horizon, dtype=torch.bool)}
    hooked.compute_loss(training_batch)
    assert FixedEncoder.calls == 3  # global_conditioning, generate_actions, compute_loss


def test_pushing_the_history_then_predicting_a_chunk_is_what_select_action_does(
    diffusion_config: DiffusionConfig,
) -> None:
    config = dataclasses.replace(diffusion_config, n_action_steps=1)  # select_action predicts on every call
    torch.manual_seed(0)
    policy = DiffusionPolicy(config).eval()
    twin = DiffusionPolicy(config).eval()
    twin.load_state_dict(policy.state_dict())
    policy.reset()
    twin.reset()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for seed in (4, 5):  # the second observation sees the first in its history
            observation = {OBS_STATE: torch.randn(1, 6, generator=generator),
                           CAMERA: torch.rand(1, 3, 32, 32, generator=generator)}
            batch = push_observation_history(policy, observation)
            assert batch[OBS_IMAGES].shape == (1, 1, 3, 32, 32)
            torch.manual_seed(seed)
            chunk = policy.predict_action_chunk(batch)
            torch.manual_seed(seed)
            first = twin.select_action(dict(observation))
            assert chunk.shape == (1, 1, 6)
            torch.testing.assert_close(chunk[:, 0], first)
    plain = {OBS_STATE: torch.zeros(1, 6)}
    assert push_observation_history(nn.Linear(6, 6), plain) is plain  # no history: unchanged


# --- datasets -----------------------------------------------------------------------------------------


def vector_dataset(root: Path, frames: int, repo_id: str = "test/compat_vectors") -> LeRobotDataset:
    """A LeRobot dataset with one float column and one episode (no images, no videos)."""
    dataset = LeRobotDataset.create(repo_id, fps=10, root=root, use_videos=False,
                                    features={"x": {"dtype": "float32", "shape": (2,), "names": None}})
    for i in range(frames):
        dataset.add_frame({"x": np.full(2, i, dtype=np.float32), "task": "count"})
    dataset.save_episode()
    dataset.finalize()
    return dataset


def test_save_episode_embeds_images_only_for_tables_with_an_image_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert needs_embedding(datasets.Features({CAMERA: datasets.Image()}))
    assert needs_embedding(datasets.Features({"frames": datasets.List(datasets.Image())}))
    assert not needs_embedding(datasets.Features(
        {"action": datasets.List(datasets.Value("float32")), "index": datasets.Value("int64")}))

    # save_episode goes through the module-level name the seam swaps (counted here, not replaced).
    embedded: list[int] = []
    original = lerobot_dataset_module.embed_images

    def counted(table: datasets.Dataset) -> datasets.Dataset:
        embedded.append(len(table))
        return original(table)

    monkeypatch.setattr(lerobot_dataset_module, "embed_images", counted)
    vector_dataset(tmp_path / "plain", frames=3)
    assert embedded == [3]
    with embedding_only_for_image_columns():
        vector_dataset(tmp_path / "skipped", frames=4)
        numbers = datasets.Dataset.from_dict({"x": [1.0, 2.0]})
        assert lerobot_dataset_module.embed_images(numbers) is numbers
    assert embedded == [3]
    assert lerobot_dataset_module.embed_images is counted  # restored
    assert len(LeRobotDataset("test/compat_vectors", root=tmp_path / "skipped")) == 4


def test_aggregation_shows_no_progress_bars_of_its_own_while_switched_off(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    sources = [tmp_path / "a", tmp_path / "b"]
    for root in sources:
        vector_dataset(root, frames=2)
    capfd.readouterr()
    aggregate_datasets(["test/compat_vectors"] * 2, "test/joined", roots=sources, aggr_root=tmp_path / "shown")
    assert "Copy data and videos" in capfd.readouterr().err
    with aggregate_without_progress_bars():
        aggregate_datasets(["test/compat_vectors"] * 2, "test/joined", roots=sources, aggr_root=tmp_path / "quiet")
    assert "Copy data and videos" not in capfd.readouterr().err
    assert len(LeRobotDataset("test/joined", root=tmp_path / "quiet")) == 4


def video_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_the_lossless_encoder_keeps_every_frame_and_the_encoders_settings(tmp_path: Path) -> None:
    lerobots = StreamingVideoEncoder(fps=30, vcodec="h264", g=4, crf=20, queue_maxsize=1)
    encoder = lossless_encoder(lerobots)
    assert isinstance(encoder, LosslessStreamingEncoder)
    settings = ("fps", "vcodec", "pix_fmt", "g", "crf", "preset", "queue_maxsize", "encoder_threads")
    assert [getattr(encoder, name) for name in settings] == [getattr(lerobots, name) for name in settings]
    assert (encoder.g, encoder.crf, encoder.queue_maxsize) == (4, 20, 1)
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    with pytest.raises(RuntimeError, match="no active episode"):
        encoder.feed_frame(CAMERA, image)
    encoder.start_episode([CAMERA], tmp_path)
    frames = 45
    for i in range(frames):  # a one-frame queue: every feed waits for the encoder instead of dropping
        encoder.feed_frame(CAMERA, np.full((48, 64, 3), i * 5, dtype=np.uint8))
    video, _ = encoder.finish_episode()[CAMERA]
    decoded = video_frames(video)
    assert len(decoded) == frames
    assert [round(float(f.mean()) / 5) for f in decoded] == list(range(frames))
    encoder.close()


def test_a_streaming_dataset_encodes_through_the_lossless_encoder(tmp_path: Path) -> None:
    features = {CAMERA: {"dtype": "video", "shape": (48, 64, 3), "names": ["height", "width", "channels"]}}
    dataset = LeRobotDataset.create("test/compat_video", fps=30, root=tmp_path / "video", features=features,
                                    use_videos=True, vcodec="h264", streaming_encoding=True)
    use_lossless_streaming_encoder(dataset)
    assert isinstance(dataset._streaming_encoder, LosslessStreamingEncoder)  # the private slot it swaps
    for i in range(20):
        dataset.add_frame({CAMERA: np.full((48, 64, 3), i * 10, dtype=np.uint8), "task": "grey"})
    dataset.save_episode()
    dataset.finalize()
    reloaded = LeRobotDataset("test/compat_video", root=tmp_path / "video")
    assert len(reloaded) == 20
    assert abs(float(reloaded[19][CAMERA].mean()) * 255 - 190) < 3
    plain = vector_dataset(tmp_path / "plain", frames=1)  # no streaming encoder: nothing to swap
    use_lossless_streaming_encoder(plain)


def _depth_dataset(root: Path, maps_mm: list[np.ndarray]) -> LeRobotDataset:
    """One episode per map: a one-channel uint16 depth-map feature, as the converter declares and writes it."""
    import PIL.Image

    features = {"observation.images.head_depth": {"dtype": "image", "shape": (4, 5, 1),
                                                  "names": ["height", "width", "channels"],
                                                  "info": {"is_depth_map": True, "depth_unit": "mm"}},
                "action": {"dtype": "float32", "shape": (1,), "names": ["a"]}}
    dataset = LeRobotDataset.create("test/depth", fps=10, features=features, root=root, use_videos=False)
    for depth in maps_mm:
        for _ in range(3):
            dataset.add_frame({"observation.images.head_depth": PIL.Image.fromarray(depth),
                               "action": np.zeros(1, np.float32), "task": "t"})
        dataset.save_episode()
    dataset.finalize()
    return dataset


def test_depth_maps_get_one_channel_statistics_in_millimetres(tmp_path: Path) -> None:
    near, far = np.full((4, 5), 300, np.uint16), np.full((4, 5), 40_000, np.uint16)  # far: past int16
    assert is_depth_map({"info": {"is_depth_map": True}}) and not is_depth_map({"dtype": "image"})
    lerobots = lerobot_dataset_module.compute_episode_stats
    with depth_map_statistics():  # two episodes: their statistics are aggregated too
        dataset = _depth_dataset(tmp_path / "with", [near, far])
    assert lerobot_dataset_module.compute_episode_stats is lerobots  # restored
    stats = dataset.meta.stats["observation.images.head_depth"]
    assert np.shape(stats["mean"]) == (1, 1, 1)
    assert float(np.ravel(stats["min"])[0]) == 300 and float(np.ravel(stats["max"])[0]) == 40_000
    item = LeRobotDataset("test/depth", root=tmp_path / "with")[3]["observation.images.head_depth"]
    assert item.shape == (1, 4, 5)  # read back as the 16-bit map it is (int16: 40 m wraps; see depth_map_to_metres)
    # LeRobot 0.4.4's own statistics read the map as 8-bit RGB: three channels, clipped to 255 / 255.
    plain = _depth_dataset(tmp_path / "without", [near, far]).meta.stats["observation.images.head_depth"]
    assert np.shape(plain["mean"]) == (3, 1, 1) and float(np.max(plain["max"])) <= 1.0


def test_load_hf_dataset_reads_the_table_before_any_item(reach_dataset: SyntheticDataset) -> None:
    dataset = LeRobotDataset(reach_dataset.repo_id, root=reach_dataset.root, episodes=[1, 2])
    table = load_hf_dataset(dataset)
    assert len(table) == 2 * reach_dataset.frames_per_episode
    assert sorted(set(torch.stack(list(table["episode_index"])).tolist())) == [1, 2]
    assert load_hf_dataset(dataset) is table


def open_files() -> set[str]:
    links = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            links.add(os.readlink(fd))
        except OSError:
            continue
    return links


def test_clearing_the_decoder_cache_closes_the_video_files_it_holds(reach_dataset: SyntheticDataset) -> None:
    dataset = LeRobotDataset(reach_dataset.repo_id, root=reach_dataset.root)
    video = (dataset.root / dataset.meta.get_video_file_path(0, CAMERA)).resolve()
    clear_video_decoder_cache()
    decode_video_frames(video, [0.0], dataset.tolerance_s, "torchcodec")
    assert str(video) in open_files()  # the decoder stays cached, its file open
    clear_video_decoder_cache()
    assert str(video) not in open_files()


def test_a_frame_source_dataset_supplies_the_video_frames_of_every_item(reach_dataset: SyntheticDataset) -> None:
    class GreyFrames(FrameSourceDataset):
        def video_frames(self, query_timestamps: dict[str, list[float]], ep_idx: int) -> dict[str, torch.Tensor]:
            return {key: torch.full((3, 96, 128), ep_idx / 10) for key in query_timestamps}

    dataset = GreyFrames(reach_dataset.repo_id, root=reach_dataset.root)
    original = LeRobotDataset(reach_dataset.repo_id, root=reach_dataset.root)
    index = reach_dataset.frames_per_episode + 3  # an item of episode 1
    item, expected = dataset[index], original[index]
    assert torch.equal(item[CAMERA], torch.full((3, 96, 128), 0.1))
    torch.testing.assert_close(item[OBS_STATE], expected[OBS_STATE])
    assert not torch.equal(expected[CAMERA], item[CAMERA])


def test_every_seam_is_tested_here() -> None:
    public = {name for name in vars(lerobot_compat) if not name.startswith("_") and (
        getattr(getattr(lerobot_compat, name), "__module__", None) == lerobot_compat.__name__)}
    tested = set(globals())
    assert public - tested == set(), f"lerobot_compat seams without a test: {sorted(public - tested)}"


def test_normalize_actions_is_the_inverse_of_the_postprocessor() -> None:
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.factory import make_pre_post_processors

    config = ACTConfig(device="cpu")
    config.input_features = {OBS_STATE: PolicyFeature(FeatureType.STATE, (6,))}
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (6,))}
    stats = {key: {"mean": np.arange(6.0), "std": np.full(6, 2.0), "min": -np.ones(6), "max": np.ones(6)}
             for key in (OBS_STATE, "action")}
    _, postprocessor = make_pre_post_processors(config, dataset_stats=stats)
    actions = torch.randn(1, 5, 6)
    normalized = normalize_actions(postprocessor, actions)
    torch.testing.assert_close(normalized, (actions - torch.arange(6.0)) / 2.0)
    torch.testing.assert_close(postprocessor(normalized), actions)


def test_enable_rtc_gives_a_loaded_flow_matching_policy_its_guidance(tmp_path: Path) -> None:
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    from koch_runtime.vlm_backbone import SmolVLMBackbone, build_backbone, smolvla_overrides

    spec = SmolVLMBackbone(text_hidden=32, text_layers=2, vision_hidden=16, vision_layers=1)
    backbone = build_backbone(tmp_path / "backbone", ["pick up the red cube"], spec)
    config = SmolVLAConfig(device="cpu", chunk_size=4, n_action_steps=4, **smolvla_overrides(backbone, spec))
    config.input_features = {OBS_STATE: PolicyFeature(FeatureType.STATE, (6,)),
                             "observation.images.head": PolicyFeature(FeatureType.VISUAL, (3, 32, 32))}
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (6,))}
    policy = SmolVLAPolicy(config)
    assert policy.model.rtc_processor is None and not policy._rtc_enabled()
    enable_rtc(policy, execution_horizon=3)
    assert policy._rtc_enabled() and policy.model.rtc_processor is policy.rtc_processor
    assert policy.config.rtc_config.execution_horizon == 3


def test_pi0_tokenizer_from_gives_pi0s_processors_a_local_tokenizer(tmp_path: Path) -> None:
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.pi0 import processor_pi0
    from lerobot.policies.pi0.configuration_pi0 import PI0Config
    from lerobot.processor import TokenizerProcessorStep

    from koch_runtime.vlm_backbone import build_tokenizer

    folder = build_tokenizer(tmp_path / "tokenizer", ["pick up the red cube"])
    config = PI0Config(device="cpu")
    config.input_features = {OBS_STATE: PolicyFeature(FeatureType.STATE, (6,))}
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (6,))}
    with pi0_tokenizer_from(str(folder)):
        preprocessor, _ = make_pre_post_processors(config, dataset_stats=None)
    step = next(s for s in preprocessor.steps if isinstance(s, TokenizerProcessorStep))
    assert step.tokenizer_name == str(folder)
    assert step.input_tokenizer.convert_ids_to_tokens(step.input_tokenizer("red cube")["input_ids"]) == ["red", "cube"]
    assert processor_pi0.TokenizerProcessorStep is TokenizerProcessorStep  # LeRobot's factory as it was


def test_an_adapted_pi0_backbone_reads_its_prefix_cache_and_refuses_pi05_conditioning() -> None:
    """The seams of pi0 on stock transformers, on LeRobot's PaliGemmaWithExpertModel with small Gemma sizes
    (test_policies.py checks a whole pi0: its training and inference passes predict the same velocity)."""
    from lerobot.policies.pi0.modeling_pi0 import GemmaConfig, PaliGemmaWithExpertModel

    run_pi0_on_stock_transformers()
    small = GemmaConfig(width=64, depth=2, mlp_dim=128, num_heads=2, num_kv_heads=1, head_dim=32)
    model = PaliGemmaWithExpertModel(small, small, precision="float32", image_size=28)
    adapt_pi0_model(model)
    assert model.paligemma.model.multi_modal_projector.linear.out_features == 64  # the text width, not 2048
    assert model.paligemma.model.get_image_features(torch.zeros(1, 3, 28, 28)).shape == (1, 4, 64)

    prefix = torch.randn(1, 5, 64)
    _, cache = model.forward(attention_mask=torch.zeros(1, 1, 5, 5), position_ids=torch.arange(5)[None],
                             past_key_values=None, inputs_embeds=[prefix, None], use_cache=True)
    suffix = torch.randn(1, 3, 64)
    outputs = [model.forward(attention_mask=torch.zeros(1, 1, 3, 8), position_ids=torch.arange(5, 8)[None],
                             past_key_values=cache, inputs_embeds=[None, suffix], use_cache=False)[0][1]
               for _ in range(2)]
    assert cache.get_seq_length() == 5  # read, not extended by the suffix
    torch.testing.assert_close(outputs[0], outputs[1])

    norm = model.gemma_expert.model.layers[0].input_layernorm
    output, gate = norm(suffix, cond=None)
    assert gate is None and output.shape == suffix.shape
    with pytest.raises(Pi0AdaptationError, match="pi0.5"):
        norm(suffix, cond=torch.zeros(1, 64))
    with pytest.raises(ImportError):  # pi0.5's constructor still finds no patched transformers
        __import__("transformers.models.siglip.check")
