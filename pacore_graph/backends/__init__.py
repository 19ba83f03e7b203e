"""Model backends: any OpenAI-compatible endpoint; any LangChain chat model works as is."""

from pacore_graph.backends.openai_compat import ChatOpenAICompatible

__all__ = ["ChatOpenAICompatible"]
