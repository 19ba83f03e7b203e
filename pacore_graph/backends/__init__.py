"""Model backends: any OpenAI-compatible endpoint, the embedded CPU model, vLLM in-process.
Any LangChain chat model works; these add what PaCoRe records (thinking, exact usage)."""

from pacore_graph.backends.embedded import EmbeddedBackendUnavailable, EmbeddedServer
from pacore_graph.backends.launch import model_for_endpoint, model_from_env
from pacore_graph.backends.openai_compat import ChatOpenAICompatible
from pacore_graph.backends.vllm import ChatVLLM

__all__ = [
    "ChatOpenAICompatible",
    "ChatVLLM",
    "EmbeddedBackendUnavailable",
    "EmbeddedServer",
    "model_for_endpoint",
    "model_from_env",
]
