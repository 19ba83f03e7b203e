"""The official stepfun-ai/PaCoRe pipeline, run unmodified from an extract outside the repo.

Its code is never copied here: ``load_exp`` imports ``pacore.batch_inference.base_exp``
from the directory given by ``run.py --official DIR`` (default ``$PACORE_OFFICIAL``). Make
the extract with::

    git clone https://github.com/stepfun-ai/PaCoRe /path/to/pacore-official
    pip install loguru        # its one dependency the bench extra adds (aiohttp, jinja2 are in)

It is driven the way its users drive it (``playground/example_batch_inference_*.py``): a
subclass of ``Exp`` that sets class attributes only, then ``await exp.async_run()``. See
``official_exp`` for the attributes chosen.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ENTRY = Path("pacore/batch_inference/base_exp.py")
HOW_TO = (
    "make an extract with `git clone https://github.com/stepfun-ai/PaCoRe DIR` "
    "(or `git archive`) and `pip install loguru`, then pass --official DIR or set "
    "PACORE_OFFICIAL=DIR"
)


class OfficialNotFoundError(SystemExit):
    """The extract of the official pipeline is missing or incomplete."""


def official_dir(option: str | None) -> Path:
    """The extract's directory from ``--official`` or ``$PACORE_OFFICIAL``, checked.

    Raises:
        OfficialNotFoundError: neither is set, or the directory lacks ``ENTRY``; its
            message is one line saying how to make the extract.
    """
    value = option or os.environ.get("PACORE_OFFICIAL")
    if not value:
        raise OfficialNotFoundError(f"no official PaCoRe extract given: {HOW_TO}")
    path = Path(value).expanduser().resolve()
    if not (path / ENTRY).is_file():
        raise OfficialNotFoundError(f"{path} has no {ENTRY}: {HOW_TO}")
    return path


def load_exp(directory: str | Path) -> type:
    """``Exp`` imported from the extract (its directory goes first on ``sys.path``)."""
    sys.path.insert(0, str(directory))
    try:
        from pacore.batch_inference.base_exp import Exp  # type: ignore[import-not-found]
    except ModuleNotFoundError as exc:
        raise OfficialNotFoundError(
            f"the official pipeline needs {exc.name!r}: pip install {exc.name}"
        ) from None
    return Exp  # type: ignore[no-any-return]


def log_to_file(path: str | Path) -> None:
    """Keep the pipeline's logging as it ships (loguru, every level, its default format),
    but into a file: writing it costs what it costs its users; a terminal's speed must not
    count against it."""
    from loguru import logger

    logger.remove()
    logger.add(str(path), level="DEBUG", enqueue=False)


def write_problems(path: str | Path, problems: list[str]) -> None:
    """The input rows as the official pipeline reads them: ``{"id", "messages"}``."""
    with open(path, "w") as f:
        for i, text in enumerate(problems):
            row = {"id": f"problem-{i}", "messages": [{"role": "user", "content": text}]}
            f.write(json.dumps(row) + "\n")


def official_exp(
    exp: type,
    *,
    api_base: str,
    data_path: str | Path,
    output_dir: str | Path,
    rounds: list[int],
    max_concurrent: int,
) -> Any:
    """An instance of a subclass of ``Exp`` that sets only class attributes, as its example
    does: ``model_name`` "sim"; ``api_base`` the simulated server's full
    ``/v1/chat/completions`` URL; ``data_path`` a jsonl of the problems; ``output_dir`` a
    temporary directory; ``num_responses_per_round`` the round vector without the final 1
    (``Exp`` appends it); ``max_concurrent`` as many calls as the workload has in flight
    (its example uses 1024; the caller passes at least that). Everything else keeps the
    base class's value: ``stream`` False, ``max_tokens`` 131072, temperature and top_p 1.0,
    5 retries, seed 42."""
    attributes = {
        "model_name": "sim",
        "api_base": api_base,
        "data_path": str(data_path),
        "output_dir": str(output_dir),
        "num_responses_per_round": list(rounds),
        "max_concurrent": max_concurrent,
    }
    return type("BenchExp", (exp,), attributes)()
