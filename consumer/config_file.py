"""Reading a JSON configuration file into a pydantic model, with errors a person can act on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from consumer.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


def load_json_file(path: Path, model: type[ModelT], setting: str) -> ModelT:
    """``path`` parsed and validated as ``model``; ConfigError naming ``setting`` (the env
    name that points at the file), the file and the first problem otherwise."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return model.model_validate(raw)
    except OSError as exc:
        raise ConfigError(f"{setting} {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{setting} {path}: not JSON: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{setting} {path}: {where}: {first['msg']}") from exc
