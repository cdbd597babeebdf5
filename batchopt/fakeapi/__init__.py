"""A fake OpenAI/Anthropic server for rehearsing pipelines without spending, and for tests.

    with FakeServer() as server:
        client = AsyncOpenAI(base_url=server.openai_base_url, api_key="fake")

Or in its own process: `python -m batchopt.fakeapi --port 8000 --latency-ms 20`.
"""

from batchopt.fakeapi.server import FakeServer, serve

__all__ = ["FakeServer", "serve"]
