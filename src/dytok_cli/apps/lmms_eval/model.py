"""The `lmms` class lmms-eval loads for `--model dytok` (see `plugin`); importing it needs lmms-eval."""

from __future__ import annotations

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from .plugin import Answerer, request_from_args, settings_from_args


class Dytok(lmms):
    is_simple = True

    def __init__(self, batch_size: int | str = 1, max_batch_size: int | None = None, device: str | None = None,
                 **model_args) -> None:
        """`batch_size` and `max_batch_size` are lmms-eval's and ignored: questions run one at a time, those
        about one video on its shared vision pass. `device` is lmms-eval's `--device`."""
        super().__init__()
        if device is not None:
            model_args.setdefault("device", device)
        self._answerer = Answerer(settings_from_args(model_args))

    def generate_until(self, requests: list[Instance]) -> list[str]:
        parsed = [request_from_args(request.args, self.task_dict) for request in requests]
        with tqdm(total=len(parsed), desc="dytok", disable=self.rank != 0) as bar:
            return self._answerer.answer(parsed, on_answer=lambda: bar.update(1))

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("dytok generates answers; it does not score given continuations")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("dytok answers single-round questions")
