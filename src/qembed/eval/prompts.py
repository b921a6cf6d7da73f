"""Which instruction each side of a task gets, and how it reaches the model.

The rules are the engine's task presets (``qembed.model.instructions.TASKS``, the official
Qwen3-Embedding evaluation rules): asymmetric tasks (retrieval, code retrieval) instruct
queries only; symmetric ones (STS, pair classification) instruct both sides.

How the instruction travels depends on the target:

- in process, and ``server`` mode over HTTP (qembed's own server): we send the task preset
  and ``input_type`` and let the engine decide. It knows the model: MiniLM and other
  models trained without instructions get their own prompts (or none) instead.
- ``client`` mode over HTTP (default; works with any OpenAI-compatible server: TEI,
  vLLM, sglang, OpenAI): we prepend the prompt of the served model's *family*
  (``qembed.model.families``: ``Instruct: ...\\nQuery:`` for Qwen3, ``query: ``/``passage: ``
  for E5, the BGE query instructions, ...) ourselves: the exact prefix the engine would
  apply in process, so the numbers match token for token. The family is ``--prompt-family``,
  or (``auto``) what a qembed server's ``/info`` says, or what the served model's name
  says, or Qwen3 (the historical default) when nothing does.
- ``none``: raw texts on both sides (for models trained without instructions behind a
  foreign server).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from qembed.encode.options import EncodeOptions
from qembed.errors import InputError
from qembed.model.families import CLIENT_FAMILY_NAMES
from qembed.model.instructions import TASKS, format_instruction, preset_prompt
from qembed.settings import InputType

Role = InputType  # which side of a task a text is on
InstructionMode = Literal["client", "server", "none"]
INSTRUCTION_MODES: tuple[str, ...] = ("client", "server", "none")
# What ``--prompt-family`` accepts: a family, or auto (ask the server / read the model name).
PROMPT_FAMILY_CHOICES: tuple[str, ...] = ("auto", *CLIENT_FAMILY_NAMES)


def check_prompt_family(family: str | None) -> str | None:
    """``None``/``auto`` pass; anything else must be a family a client can apply itself."""
    if family is not None and family not in PROMPT_FAMILY_CHOICES:
        raise InputError(
            f"prompt family must be one of {', '.join(PROMPT_FAMILY_CHOICES)}, not {family!r}.",
            param="prompt_family",
        )
    return family


@dataclass(frozen=True)
class Prompting:
    """A task preset, an optional replacement instruction, and how to deliver it."""

    preset: str
    instruction: str | None = None  # replaces the preset's instruction text
    mode: InstructionMode = "client"

    def __post_init__(self) -> None:
        if self.preset not in TASKS:
            raise InputError(
                f"Unknown task preset {self.preset!r}; known: {', '.join(TASKS)}.", param="preset"
            )
        if self.mode not in INSTRUCTION_MODES:
            raise InputError(
                f"instruction mode must be one of {', '.join(INSTRUCTION_MODES)}, not {self.mode!r}.",
                param="instruction_mode",
            )
        if self.instruction is not None and not self.instruction.strip():
            raise InputError("instruction is empty; leave it out to use the preset's.", param="instruction")

    @property
    def symmetric(self) -> bool:
        return TASKS[self.preset].symmetric

    def instructed(self, role: Role) -> bool:
        """Whether this side gets the instruction under the preset's rules."""
        return self.mode != "none" and (role == "query" or self.symmetric)

    def encode_options(self, role: Role) -> EncodeOptions:
        """The encode options this side gets (in process, and in qembed's request bodies)."""
        if self.mode == "none":
            return EncodeOptions()
        if self.instruction is not None and self.instructed(role):
            return EncodeOptions(instruction=self.instruction.strip())
        return EncodeOptions(task=self.preset, input_type=role)

    def engine_options(self, role: Role) -> dict[str, Any]:
        """``encode_options`` as keyword arguments of ``Embedder.encode`` / body fields of qembed's server."""
        return self.encode_options(role).given()

    def client_prefix(self, role: Role, family: str = "qwen3", prompts: dict[str, str] | None = None) -> str:
        """The text a client prepends itself (``client`` mode) for a model of ``family``.

        ``prompts``: the model's own prompts when known (a qembed server's /info): they win
        over the family's default text, as in process. An explicit instruction is always
        the Qwen3 format, on the sides the preset instructs.
        """
        if self.mode == "none":
            return ""
        if self.instruction is not None:
            return format_instruction(self.instruction.strip()) if self.instructed(role) else ""
        return preset_prompt(family, prompts or {}, self.preset, role)

    def describe(self, role: Role, family: str = "qwen3", prompts: dict[str, str] | None = None) -> str:
        """One line for reports: what this side got."""
        if self.mode == "none":
            return "none"
        if self.mode == "client":
            prefix = self.client_prefix(role, family, prompts)
            return repr(prefix) if prefix else "none"
        return ", ".join(f"{k}={v}" for k, v in self.engine_options(role).items())
