"""Google Gemini backend (google-genai SDK), used only with an API key AND the user's cloud consent.

What leaves the machine: the prompt text (de-identified structured findings, the report text after
`deidentify_text`, symptoms) and, only for the reasoning stage when images are enabled, the radiograph pixels
as PNG (no DICOM header). Nothing is sent when consent is off.
"""

from __future__ import annotations

import io
import re
from typing import Any, Iterator

from medsight.config import Settings, get_settings
from medsight.llm.base import LLMBackend, LLMError, Prompt

DEFAULT_MODEL = "gemini-2.5-flash"

CLOUD_NOTICE = ("Cloud model on: the de-identified report text, the structured model findings and, for clinical "
                "reasoning, the de-identified image pixels are sent to Google Gemini. Patient names, IDs, dates and "
                "DICOM headers are removed first.")

# Identifiers that can appear in free-text reports. Names in free text cannot be found reliably by rules, so
# the report editor also warns the user not to type them.
_DEID_PATTERNS = [
    (re.compile(r"\b\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b"), "[DATE]"),
    (re.compile(r"\b(19|20)\d{2}-\d{2}-\d{2}\b"), "[DATE]"),
    (re.compile(r"\b(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+\d{1,2}(st|nd|rd|th)?,?\s+\d{4}\b",
                re.I), "[DATE]"),
    (re.compile(r"\b(MRN|PID|patient id|accession|acc)\s*[:#]?\s*[A-Z0-9-]{3,}\b", re.I), "[ID]"),
    (re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), "[ID]"),
    (re.compile(r"(\+\d{1,3}[\s.-]?)?\(?\b\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}\b"), "[NUMBER]"),
    (re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"), "[EMAIL]"),
    (re.compile(r"\b(mr|mrs|ms|miss|dr)\.?\s+[A-Z][a-z]+(\s+[A-Z][a-z]+)?", re.I), "[NAME]"),
    (re.compile(r"\b[A-Z]{2,}\^[A-Z^]+\b"), "[NAME]"),  # DICOM PN format DOE^JANE
]


def deidentify_text(text: str) -> str:
    """Replace dates, identifiers, phone numbers, e-mails and titled names with placeholders."""
    for regex, placeholder in _DEID_PATTERNS:
        text = regex.sub(placeholder, text)
    return text


def cloud_allowed(settings: Settings | None = None, consent: bool | None = None) -> tuple[bool, str]:
    """Whether Gemini may be used, and why not.

    Args:
        settings: current settings (`cloud_llm_consent` is the stored default).
        consent: the user's choice in this session, overriding the stored default.
    """
    settings = settings or get_settings()
    if not (settings.cloud_llm_consent if consent is None else consent):
        return False, "cloud use is switched off"
    if not Settings.api_key("GEMINI_API_KEY"):
        return False, "GEMINI_API_KEY is not set"
    return True, "API key set and cloud use switched on"


def _image_part(image: Any):
    import numpy as np
    from PIL import Image
    from google.genai import types

    array = np.asarray(image, dtype=np.float32)
    buffer = io.BytesIO()
    Image.fromarray((np.clip(array, 0, 1) * 255).astype("uint8")).save(buffer, format="PNG")
    return types.Part.from_bytes(data=buffer.getvalue(), mime_type="image/png")


class GeminiBackend(LLMBackend):
    """Gemini through `google.genai.Client`.

    Args:
        client: an object with `.models.generate_content(...)` / `.generate_content_stream(...)`; built from
            `GEMINI_API_KEY` when omitted (tests inject a fake).
        model: Gemini model name.
        timeout_s: per-request limit.
        send_images: allow the de-identified image to be attached.
    """

    name = "gemini"
    tier = "real"
    local = False

    def __init__(self, client: Any = None, model: str = DEFAULT_MODEL, timeout_s: float = 60.0,
                 send_images: bool = True):
        self.model = model
        self.timeout_s = timeout_s
        self.supports_images = send_images
        self._client = client

    @property
    def client(self):
        if self._client is None:
            key = Settings.api_key("GEMINI_API_KEY")
            if not key:
                raise LLMError("GEMINI_API_KEY is not set")
            from google import genai
            from google.genai import types

            self._client = genai.Client(api_key=key,
                                        http_options=types.HttpOptions(timeout=int(self.timeout_s * 1000)))
        return self._client

    def describe(self) -> str:
        return f"Google Gemini ({self.model}, cloud)"

    def _request(self, prompt: Prompt, image: Any, max_tokens: int, json_mode: bool, schema=None):
        from google.genai import types

        history = "".join(f"{m.role.upper()} (earlier turn): {m.content}\n\n" for m in prompt.history)
        contents: list[Any] = [deidentify_text(history + prompt.user)]
        if image is not None:
            contents.append(_image_part(image))
        config = types.GenerateContentConfig(
            system_instruction=prompt.system,
            max_output_tokens=max_tokens,
            temperature=0.1,
            response_mime_type="application/json" if json_mode else None,
            response_json_schema=schema.model_json_schema() if (json_mode and schema is not None) else None,
        )
        return dict(model=self.model, contents=contents, config=config)

    def _generate(self, prompt: Prompt, *, image: Any = None, max_tokens: int = 512, json_mode: bool = False,
                  schema=None) -> str:
        response = self.client.models.generate_content(**self._request(prompt, image, max_tokens, json_mode, schema))
        text = getattr(response, "text", None)
        if not text:
            raise LLMError("Gemini returned no text (blocked or empty)")
        return text

    def _stream(self, prompt: Prompt, *, image: Any = None, max_tokens: int = 512) -> Iterator[str]:
        for chunk in self.client.models.generate_content_stream(**self._request(prompt, image, max_tokens, False)):
            if getattr(chunk, "text", None):
                yield chunk.text


def gemini_backend(settings: Settings | None = None, consent: bool | None = None, client: Any = None,
                   **kwargs) -> GeminiBackend | None:
    """A Gemini backend when allowed (key set and consent on), else None."""
    allowed, _ = cloud_allowed(settings, consent)
    return GeminiBackend(client=client, **kwargs) if allowed else None
