"""Write a real verl FSDP actor checkpoint on CPU (gloo), the way verl's trainer writes one.

    torchrun --nproc_per_node=2 tests/verl/cpu_checkpoint.py --base DIR --out CKPT --step 2

verl 0.9.1 path: main_ppo (use_v1) -> TrainingWorker -> FSDPEngineWithLMHead, whose
`save_checkpoint` is `FSDPCheckpointManager.save_checkpoint(<out>/global_step_N/actor)`; the
trainer then writes `<out>/latest_checkpointed_iteration.txt`. We build that engine directly
(verl registers FSDP engines for cuda/npu only) with strategy fsdp2, do one real AdamW step so
the weights differ from the base, and save. Two things CPU needs that a GPU does not:
- verl has no CPU platform and assumes CUDA; a CPU platform is installed through verl's public
  plugin API (`verl.plugin.platform.set_platform`) before the engine is imported;
- strategy `fsdp` (FSDP1) cannot run through the engine on CPU: it hard-codes
  `sync_module_states=True`, which torch rejects for CPU tensors. FSDP2 writes the same files.
Rank 0 also saves the full fp32 state dict (verl's own gather) as the reference for the test.
"""

from __future__ import annotations

import argparse
import os
from contextlib import nullcontext

import torch
import torch.distributed as dist


def install_cpu_platform() -> None:
    from verl.plugin.platform import PlatformBase, set_platform

    class CPUPlatform(PlatformBase):
        device_name = "cpu"
        vendor_name = "cpu"
        device_module = torch.cpu

        def is_available(self):
            return True

        def current_device(self):
            return "cpu"

        def device_count(self):
            return 1

        def set_device(self, index):
            pass

        def synchronize(self, index=None):
            pass

        def manual_seed(self, seed):
            torch.manual_seed(seed)

        def manual_seed_all(self, seed):
            torch.manual_seed(seed)

        def set_allocator_settings(self, settings):
            pass

        def empty_cache(self):
            pass

        def get_device_capability(self, index=0):
            return None, None

        def communication_backend_name(self):
            return "gloo"

        def visible_devices_envvar(self):
            return "CUDA_VISIBLE_DEVICES"

        def nvtx_range(self, message):
            return nullcontext()

        def profiler_start(self):
            pass

        def profiler_stop(self):
            pass

        def ray_resource_name(self):
            return "CPU"

        def ray_noset_envvars(self):
            return []

        def is_ipc_supported(self):
            return False

        def cudart(self):
            return None

    set_platform(CPUPlatform())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--step", type=int, default=2)
    args = parser.parse_args()
    dist.init_process_group(backend="gloo")
    rank = dist.get_rank()
    install_cpu_platform()

    from verl.trainer.config import CheckpointConfig
    from verl.utils.fsdp_utils import get_fsdp_full_state_dict
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    contents = ["model", "optimizer", "extra"]  # the trainer's default save_contents
    engine = FSDPEngineWithLMHead(
        model_config=HFModelConfig(
            path=args.base,
            override_config={"attn_implementation": "sdpa"},
            enable_gradient_checkpointing=False,
            use_remove_padding=False,
        ),
        engine_config=FSDPEngineConfig(
            strategy="fsdp2",
            wrap_policy={"min_num_params": 0},
            model_dtype="fp32",
            use_torch_compile=False,
            forward_only=False,
        ),
        optimizer_config=FSDPOptimizerConfig(lr=1e-3, total_training_steps=10),
        checkpoint_config=CheckpointConfig(save_contents=contents, load_contents=contents),
    )
    engine.initialize()
    module = engine.module
    module.train()
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(rank))
    module(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    engine.optimizer.step()
    engine.optimizer.zero_grad()

    reference = get_fsdp_full_state_dict(module, offload_to_cpu=False, rank0_only=True)
    if rank == 0:
        torch.save(
            {key: value.clone() for key, value in reference.items()}, os.path.join(args.out, "reference_state_dict.pt")
        )
    engine.save_checkpoint(
        local_path=os.path.join(args.out, f"global_step_{args.step}", "actor"),
        hdfs_path=None,
        global_step=args.step,
        max_ckpt_to_keep=None,
    )
    if rank == 0:
        with open(os.path.join(args.out, "latest_checkpointed_iteration.txt"), "w") as handle:
            handle.write(str(args.step))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
