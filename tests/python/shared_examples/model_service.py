"""The model-service scenario: a CUDA nn.Linear and a transformers model
built from a config (random weights) are served by one process and run in
another; `reference` runs the same model on the server for comparison.
DEV is "cuda", or "cpu" under the CI test double (fake driver)."""
import os

import torch
from shared_tensor import SharedTensorProvider

DEV = "cpu" if os.environ.get("TCAST_SHARED_TEST_CPU_AS_CUDA") == "1" else "cuda"
provider = SharedTensorProvider()
torch.manual_seed(1234)


@provider.share(execution="task", managed=True, concurrency="serialized", cache_format_key="linear:{n}")
def linear(n: int = 64) -> torch.nn.Module:
    return torch.nn.Linear(n, 8, device=DEV)


@provider.share(execution="task", managed=True, concurrency="serialized", cache_format_key="llama:{layers}")
def llama(layers: int = 2) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True)
    m = LlamaForCausalLM(cfg).to(DEV).eval()
    return m


@provider.share(cache=False)
def linear_reference(x: torch.Tensor) -> torch.Tensor:
    return linear(x.shape[-1])(x)


@provider.share(cache=False)
def llama_reference(ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return llama(2)(ids).logits


@provider.share(cache=False, singleflight=False)
def scale(t: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return t * factor


@provider.share(execution="task", managed=True, transport="torch_ipc", cache_format_key="ipc:{n}")
def ipc_buffer(n: int = 16) -> torch.Tensor:
    return torch.zeros(n, device=DEV)


@provider.share(cache=False)
def ipc_buffer_sum(n: int = 16) -> torch.Tensor:
    return ipc_buffer(n).sum().reshape(1)

