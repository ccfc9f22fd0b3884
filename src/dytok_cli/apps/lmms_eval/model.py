"""The `lmms` class lmms-eval loads for `--model dytok` (see `plugin`); importing it needs lmms-eval."""

from __future__ import annotations

import os

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from .plugin import Answerer, gpu_index, request_from_args, settings_from_args


class Dytok(lmms):
    is_simple = True

    def __init__(self, batch_size: int | str = 1, max_batch_size: int | None = None, device: str | None = None,
                 **model_args) -> None:
        """`batch_size` and `max_batch_size` are lmms-eval's and ignored: questions run one at a time, those
        about one video on its shared vision pass. `device` is lmms-eval's `--device`."""
        super().__init__()
        if device is not None:
            model_args.setdefault("device", device)
        gpu = gpu_index(model_args)
        # What lmms-eval gathers results on, read only with several processes (where `gpu_index` names a GPU).
        self._device = torch.device("cuda", gpu) if gpu is not None else torch.device("cpu")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # One of several processes (`accelerate launch`): lmms-eval gives each its share of the requests
            # by rank, and gathers the results through the accelerator, as for its own models.
            from accelerate import Accelerator

            self.accelerator = Accelerator()
            self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        self._answerer = Answerer(settings_from_args(model_args), gpu=gpu)

    @property
    def device(self) -> torch.device:
        """Where lmms-eval puts the tensors it gathers across processes."""
        return self._device

    def generate_until(self, requests: list[Instance]) -> list[str]:
        parsed = [request_from_args(request.args, self.task_dict) for request in requests]
        with tqdm(total=len(parsed), desc="dytok", disable=self.rank != 0) as bar:
            return self._answerer.answer(parsed, on_answer=lambda: bar.update(1))

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("dytok generates answers; it does not score given continuations")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("dytok answers single-round questions")
