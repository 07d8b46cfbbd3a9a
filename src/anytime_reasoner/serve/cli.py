"""``anytime-reasoner serve``: load the model once, start its engine, serve HTTP (docs/SERVING.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn

from anytime_reasoner.config.serve import ServeConfig
from anytime_reasoner.config.train import EMBEDDED_MODEL
from anytime_reasoner.errors import UserError
from anytime_reasoner.models.checks import context_length, load_model_config
from anytime_reasoner.models.engines import check_engine, model_for_engine
from anytime_reasoner.models.loading import codec_for, generation_eos_ids, load_causal_lm, load_tokenizer, resolve_device
from anytime_reasoner.serve.app import ServerState, create_app
from anytime_reasoner.serve.backends import HFBackend, StreamingBackend
from anytime_reasoner.serve.vllm_backend import VLLMBackend
from anytime_reasoner.tasks.bootstrap import ensure_base_model

log = logging.getLogger(__name__)


def model_path(cfg: ServeConfig) -> str:
    """``cfg.model``, or the embedded model's cached folder (bootstrapped on first use)."""
    return str(ensure_base_model(progress=True)) if cfg.model == EMBEDDED_MODEL else cfg.model


def build_state(cfg: ServeConfig) -> ServerState:
    """The tokenizer, the engine of ``engine.backend`` and the limits; nothing listens yet."""
    path = model_path(cfg)
    where = resolve_device(cfg.device)
    path = model_for_engine(path, cfg.engine, where)
    tokenizer = load_tokenizer(cfg.tokenizer or path)
    codec = codec_for(tokenizer, cfg.protocol(), generation_eos_ids(path))
    model_config = load_model_config(path, "model")
    check_engine(cfg.engine, model_config, where)  # e.g. a head size vLLM's CPU kernels lack: one line
    context = context_length(model_config) or 4096
    backend: StreamingBackend
    if cfg.engine.backend == "vllm":
        backend = VLLMBackend.start(path, cfg, where)
    else:
        lm = load_causal_lm(path, cfg.dtype).to(where).eval()
        backend = HFBackend(lm, codec.eos_ids, cfg.kv_cache_tokens, cfg.max_batch_tokens, cfg.seed)
    return ServerState(cfg, backend, codec, context)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one); one clear line if it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise UserError(f"port: cannot listen on {host}:{port} ({err.strerror}); choose another port= or port=0") from None
    sock.listen(2048)
    return sock


async def serve(state: ServerState, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve ``state`` on ``sock`` until cancelled or interrupted, then stop the engine."""
    server = uvicorn.Server(uvicorn.Config(create_app(state), log_level=log_level, timeout_graceful_shutdown=2))
    try:
        await server.serve(sockets=[sock])
    finally:
        await state.backend.close()


def run_serve(cfg: ServeConfig) -> int:
    state = build_state(cfg)
    sock = bind(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {cfg.model_id} ({cfg.engine.backend} engine) on http://{shown}:{port}/  "
          f"(OpenAI API at /v1, anytime answers at /v1/anytime; Ctrl-C stops)", flush=True)  # fmt: skip
    try:
        asyncio.run(serve(state, sock))
    except KeyboardInterrupt:
        pass
    return 0


@contextlib.contextmanager
def background_server(state: ServerState, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``state`` from a thread on a free port of ``host``; yields the base URL
    (``http://127.0.0.1:PORT``); stops the server and the engine on exit. For tests and benchmarks."""
    sock = bind(host, 0)
    server = uvicorn.Server(uvicorn.Config(create_app(state), log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError("background_server: the server did not start within 30 s")
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        asyncio.run(state.backend.close())
