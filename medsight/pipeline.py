"""Analysis orchestrator: one study (plus optional clinical text) in, one serialisable result out.

Stages, in order: validate input → input gate → vision (anomaly, pathology, maps) → domain rule → free
accelerator memory → NLP → fusion → clinical reasoning (when a language-model backend is wanted) → report
assembly → status. Each stage is isolated: a failure is recorded with its message and the rest still runs.

The input gate (`medsight.gate`) decides whether the study is a frontal chest radiograph; a refused study is
not shown to any image model unless the radiologist overrides the refusal. The domain rule
(`medsight.domain`) then withholds the outputs of every image model whose weights were not trained on images
like this one: withheld outputs never reach the result's findings, fusion, risk, summary, History or PDF; the
result records what was withheld and why, and keeps the raw outputs only among its live objects.

The overall status is COMPLETE when every stage that ran succeeded and nothing was withheld; PARTIAL when
some stage failed or was skipped for lack of a model, or some image outputs were withheld while others
stand; WITHHELD when every image output was withheld; REFUSED when the gate refused the study; FAILED when
nothing useful came out (no image result and no text result).
"""

from __future__ import annotations

import inspect
import logging
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from medsight import registry
from medsight.device import MODELS_IN_USE, free_accelerator_memory

log = logging.getLogger(__name__)

STATUS_COMPLETE, STATUS_PARTIAL, STATUS_FAILED = "COMPLETE", "PARTIAL", "FAILED"
STATUS_REFUSED, STATUS_WITHHELD = "REFUSED", "WITHHELD"

# Which maps come from which image-model slot (withheld together with that slot's scores).
ANOMALY_MAPS = ("patch_deviation", "spatial_anomaly", "paper_attention")
OK, SKIPPED, FAILED = "ok", "skipped", "failed"

# Maps are the slowest part of a warm analysis; by default only the maps a reader needs first are computed
# (the spatial anomaly map and Grad-CAM of positive labels, at most this many).
MAX_PATHOLOGY_MAPS = 3

ProgressFn = Callable[[str, int, int], None]

SHARED_PASS_NOTE = "score and spatial anomaly map from one VGG16 pass (time includes the map's backward pass)"
DEVIATION_PASS_NOTE = "score and deviation-from-normal activations from one VGG16 pass"


@dataclass
class StageRecord:
    """What happened in one stage."""

    name: str
    status: str
    seconds: float = 0.0
    rss_mb: float = 0.0
    message: str = ""
    tier: str = ""
    runtime: str = ""  # what ran an image model's forward pass: "ONNX Runtime fp32" or "PyTorch fp32 eager"


@dataclass
class AnalysisResult:
    """Everything one analysis produced; `to_dict()` is what History stores and the PDF prints."""

    analysis_id: str
    created: str
    status: str
    study: dict
    symptoms: str = ""
    stages: list[StageRecord] = field(default_factory=list)
    anomaly: dict | None = None
    pathology: dict | None = None
    maps: dict[str, dict] = field(default_factory=dict)
    nlp: dict | None = None
    fusion: dict | None = None
    reasoning: dict | None = None
    gate: dict | None = None
    domain: dict | None = None
    withheld: dict[str, dict] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    models: dict[str, dict] = field(default_factory=dict)
    # Live objects for the UI (heatmap arrays, loaded models); never serialised.
    objects: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        # Without the live objects: asdict would deep-copy every heatmap and radiograph only to drop them.
        data = asdict(replace(self, objects={}))
        data.pop("objects")
        return data

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.name == name), None)


def _rss_mb() -> float:
    try:
        import psutil
    except ImportError:
        return 0.0
    return round(psutil.Process().memory_info().rss / 2**20, 1)


class _Runner:
    """Runs named stages in isolation and records them."""

    def __init__(self, result: AnalysisResult, progress: ProgressFn | None, total: int):
        self.result, self.progress, self.total, self.index = result, progress, total, 0

    def run(self, name: str, fn: Callable[[], tuple[str, ...] | None]) -> bool:
        """Run `fn`; it returns None (ok) or (status, message, tier[, runtime]). Exceptions become a failed stage."""
        self.index += 1
        if self.progress:
            self.progress(name, self.index, self.total)
        start = time.perf_counter()
        status, message, tier, runtime = OK, "", "", ""
        try:
            outcome = fn()
            if outcome:
                status, message, tier, runtime = (*outcome, "")[:4]
        except registry.ModelUnavailable as exc:
            status, message = SKIPPED, str(exc).splitlines()[0]
        except Exception as exc:  # isolation is the point: record and go on
            status, message = FAILED, f"{type(exc).__name__}: {exc}"
            log.error("stage %s failed: %s", name, traceback.format_exc(limit=6))
        self.result.stages.append(
            StageRecord(name, status, round(time.perf_counter() - start, 4), _rss_mb(), message, tier, runtime)
        )
        return status == OK


def _load(slot: str, given: Any) -> tuple[Any, dict]:
    """A model passed in by the caller (a `LoadedModel` or a bare model), else the registry's."""
    if isinstance(given, registry.LoadedModel):
        return given.model, given.provenance.to_dict()
    if given is not None:
        provenance = getattr(given, "provenance", None)
        if hasattr(provenance, "to_dict"):
            provenance = provenance.to_dict()
        return given, (provenance if isinstance(provenance, dict) else {"tier": str(getattr(given, "tier", ""))})
    loaded = registry.load(slot)
    return loaded.model, loaded.provenance.to_dict()


def _validate(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 2:
        raise ValueError("the study image must be a 2-D greyscale array")
    if min(image.shape) < 32:
        raise ValueError(f"the image is too small to analyse ({image.shape[1]}×{image.shape[0]} pixels)")
    if not np.isfinite(image).all():
        raise ValueError("the image contains invalid (NaN or infinite) pixel values")
    if float(image.max() - image.min()) < 1e-6:
        raise ValueError("the image is blank (every pixel has the same value)")


def _gate_decision(study: Any, given: Any, override_by: str | None) -> dict:
    """The gate's decision as a dict: the caller's, else the gate's own; a refusal becomes an override on request."""
    from medsight.gate import GateDecision, check_study

    if given is None:
        decision = check_study(study)
    else:
        decision = GateDecision.from_dict(given) if isinstance(given, dict) else given
    if override_by:
        decision = decision.overridden(override_by)  # changes nothing on an accepted study
    return decision.to_dict()


def _gate_allows(gate: dict | None) -> bool:
    from medsight.domain import gate_accepts_chest

    return gate is None or gate_accepts_chest(gate)


def _map_slot(key: str) -> str:
    """The image-model slot whose weights drew a map."""
    return "anomaly.detector" if key in ANOMALY_MAPS else "pathology.classifier"


def apply_domain_rule(result: "AnalysisResult", study: Any) -> list[str]:
    """Withhold the outputs of image models whose weights cannot speak about this input.

    For every image-model slot that ran, decides (`medsight.domain.assess`, with the gate's decision) whether
    the study lies inside the domain its weights were trained on. Outside: its scores and maps leave the result
    and go to `result.objects["withheld"][slot]` (live only, for a greyed "show anyway" view);
    `result.withheld[slot]` records what and why, never the numbers. Returns the withheld outputs' descriptions.
    """
    from medsight import domain

    slots = [slot for slot in ("anomaly.detector", "pathology.classifier") if slot in result.models]
    assessment = domain.assess(study, {slot: result.models[slot] for slot in slots}, gate=result.gate or {})
    phantom = assessment.phantom
    result.domain = {"phantom": phantom.to_dict() if phantom else None,
                     "slots": {slot: v.to_dict() for slot, v in assessment.verdicts.items()}}
    described = []
    heatmaps = result.objects.get("heatmaps", {})
    for slot, verdict in assessment.verdicts.items():
        if verdict.inside:
            continue
        field_name = "anomaly" if slot == "anomaly.detector" else "pathology"
        owned = [k for k in dict.fromkeys([*result.maps, *heatmaps]) if _map_slot(k) == slot]
        result.objects.setdefault("withheld", {})[slot] = {
            "output": getattr(result, field_name),
            "maps": {k: heatmaps.pop(k) for k in owned if k in heatmaps},
        }
        for key in owned:
            result.maps.pop(key, None)
        setattr(result, field_name, None)
        result.withheld[slot] = domain.withheld_entry(verdict, result.models[slot])
        described.append(result.withheld[slot]["what"])
    return described


def run_analysis(
    study: Any,
    symptoms: str = "",
    *,
    detector: Any = None,
    classifier: Any = None,
    maps: str = "key",
    reasoning_backend: Any = None,
    progress: ProgressFn | None = None,
    gate: Any = None,
    override_by: str | None = None,
) -> AnalysisResult:
    """Analyse one study.

    Args:
        study: a `medsight.ingest.Study` (needs `.image`, `.to_dict()`).
        symptoms: free-text symptoms or clinical context (may be empty).
        detector / classifier: already-loaded models, preferably `registry.LoadedModel` so their
            provenance is recorded (the app passes its cached ones); otherwise loaded through the registry.
        maps: "none", "key" (spatial anomaly map + Grad-CAM of up to MAX_PATHOLOGY_MAPS positive labels) or
            "all" (also the paper attention map and every label's Grad-CAM).
        reasoning_backend: a language-model backend for the optional clinical reasoning stage; None runs the
            deterministic reasoning rules when that module is present.
        progress: called as progress(stage_name, index, total) before each stage.
        gate: the input gate's decision (a `GateDecision` or its dict) when the caller already has it; else
            the pipeline runs the gate.
        override_by: user name of a radiologist who chose "analyse anyway" for a study the gate refused; the
            override is recorded in the result (and by the caller in the audit log).

    Returns:
        AnalysisResult with status COMPLETE / PARTIAL / WITHHELD / REFUSED / FAILED and a record per stage.
    """
    analysis = _Analysis(study, symptoms, detector=detector, classifier=classifier, maps=maps,
                         reasoning_backend=reasoning_backend, gate=gate, override_by=override_by)
    runner = _Runner(analysis.result, progress, total=12)
    analysis.valid = runner.run("validate input", analysis.validate_input)
    runner.run("input gate", analysis.input_gate)
    analysis.keep_refused_study_from_image_models()
    with MODELS_IN_USE:
        runner.run("vision: anomaly detector", analysis.anomaly_detector)
        runner.run("vision: pathology classifier", analysis.pathology_classifier)
        runner.run("vision: heatmaps", analysis.heatmaps)
    runner.run("domain rule", analysis.domain_rule)
    runner.run("free accelerator memory", analysis.free_memory)
    runner.run("clinical NLP", analysis.clinical_nlp)
    runner.run("fusion, uncertainty and risk", analysis.fusion)
    runner.run("clinical reasoning", analysis.clinical_reasoning)
    runner.run("report assembly", analysis.assemble_report)
    runner.run("status", analysis.set_status)
    return analysis.result


class _Analysis:
    """One analysis in progress: the study, the caller's options and the result its stages fill in.

    Each stage method returns None (ok) or (status, message, tier[, runtime]), as `_Runner.run` expects.
    """

    def __init__(self, study: Any, symptoms: str, *, detector: Any, classifier: Any, maps: str,
                 reasoning_backend: Any, gate: Any, override_by: str | None) -> None:
        self.study, self.symptoms, self.maps = study, symptoms or "", maps
        self.detector, self.classifier, self.reasoning_backend = detector, classifier, reasoning_backend
        self.given_gate, self.override_by = gate, override_by
        self.image = getattr(study, "image", None)
        self.result = AnalysisResult(
            analysis_id=uuid.uuid4().hex[:12],
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            status=STATUS_FAILED,
            study=study.to_dict() if hasattr(study, "to_dict") else {},
            symptoms=self.symptoms,
        )
        self.valid = False
        self.no_image = "no valid image"  # why the image models are skipped

    def validate_input(self) -> None:
        """A 2-D, finite, non-blank image large enough to analyse."""
        _validate(self.image)

    def input_gate(self):
        """Whether this is a frontal chest radiograph, or the radiologist's override of a refusal."""
        if not self.valid:
            return SKIPPED, "no valid image", ""
        gate = self.result.gate = _gate_decision(self.study, self.given_gate, self.override_by)
        if gate.get("decision") == "refused":
            return OK, f"refused: {gate.get('reason', '')}", ""
        if gate.get("decision") == "overridden":
            return OK, f"refusal overridden by {gate.get('overridden_by') or 'the radiologist'}", ""
        return None

    def keep_refused_study_from_image_models(self) -> None:
        """A study the gate refused (and nobody overrode) is shown to no image model."""
        if self.valid and not _gate_allows(self.result.gate):
            self.valid = False
            self.no_image = f"input gate: {(self.result.gate or {}).get('reason') or 'not a frontal chest radiograph'}"

    def anomaly_detector(self):
        """The fused anomaly score, from the same VGG16 pass as the key anomaly map when maps are wanted."""
        if not self.valid:
            return SKIPPED, self.no_image, ""
        result, image = self.result, self.image
        model, prov = _load("anomaly.detector", self.detector)
        result.objects["detector"] = model
        result.models["anomaly.detector"] = prov
        tier = prov.get("tier", "")
        if self.maps != "none" and _has_deviation_model(model):
            # The deviation map needs only this pass's activations: kept for the maps stage.
            scored, activations = model.score_with_activations(image)
            result.objects["anomaly_pass"] = (scored, activations)
            result.anomaly = scored.to_dict()
            return OK, DEVIATION_PASS_NOTE, result.anomaly.get("tier", tier), result.anomaly.get("runtime", "")
        shared = self.maps != "none" and _score_with_spatial_map(result, model, image)
        if not shared:
            result.anomaly = model.score(image).to_dict()
        return (OK, SHARED_PASS_NOTE if shared else "", result.anomaly.get("tier", tier),
                result.anomaly.get("runtime", ""))

    def pathology_classifier(self):
        """Per-label probabilities against their operating thresholds."""
        if not self.valid:
            return SKIPPED, self.no_image, ""
        model, prov = _load("pathology.classifier", self.classifier)
        self.result.objects["classifier"] = model
        self.result.models["pathology.classifier"] = prov
        if self.maps != "none" and hasattr(model, "predict_with_activations"):
            # Each label's map is drawn from this pass's activations: kept for the maps stage.
            predicted, activations = model.predict_with_activations(self.image)
            if activations is not None:
                self.result.objects["pathology_pass"] = activations
        else:
            predicted = model.predict(self.image)
        self.result.pathology = predicted.to_dict()
        return OK, "", self.result.pathology.get("tier", prov.get("tier", "")), self.result.pathology.get("runtime", "")

    def heatmaps(self):
        """The requested heatmaps (see `compute_maps`), reusing the anomaly stage's pass where it can."""
        if self.maps == "none" or not self.valid:
            return SKIPPED, "maps not requested" if self.maps == "none" else self.no_image, ""
        objects = self.result.objects
        reused = "spatial_anomaly" in objects.get("heatmaps", {}) or "anomaly_pass" in objects
        computed = compute_maps(self.result, self.image, which=self.maps)
        if not computed:
            return SKIPPED, "no model available to explain", ""
        notes = (["anomaly map from the anomaly stage's VGG16 pass"] if reused else []) + (
            ["pathology maps from the classifier's pass"]
            if "pathology_pass" in objects and any(k.startswith("pathology:") for k in computed) else [])
        return (OK, "; ".join(notes), "") if notes else None

    def domain_rule(self):
        """Withhold the outputs of image models whose weights cannot speak about this study."""
        if not self.result.models:
            return SKIPPED, "no image model ran", ""
        withheld = apply_domain_rule(self.result, self.study)
        if withheld:
            return OK, "withheld: " + ", ".join(withheld), ""
        return None

    def free_memory(self) -> None:
        """Release accelerator memory before the text stages."""
        free_accelerator_memory()

    def clinical_nlp(self):
        """Entities and conditions from the clinical text."""
        if not self.symptoms.strip():
            return SKIPPED, "no clinical text entered", ""
        from medsight.nlp import analyze_text

        self.result.nlp = analyze_text(self.symptoms).to_dict()
        return OK, "", str(self.result.nlp.get("tier", ""))

    def fusion(self):
        """Image–text agreement, uncertainty and risk."""
        result = self.result
        if not (result.anomaly or result.pathology or result.nlp):
            return SKIPPED, "nothing to fuse", ""
        from medsight.fusion import fuse

        result.fusion = fuse(result.anomaly, result.pathology, result.nlp).to_dict()
        return None

    def clinical_reasoning(self):
        """A ranked differential from the findings, by the language-model backend or the deterministic rules."""
        try:
            from medsight.llm.reasoning import clinical_reasoning
        except ImportError:
            return SKIPPED, "clinical reasoning is not installed in this build", ""
        result = self.result
        findings = {"anomaly": result.anomaly, "pathology": result.pathology, "nlp": result.nlp, "fusion": result.fusion}
        reasoning = clinical_reasoning(findings, self.symptoms, image=self.image, llm=self.reasoning_backend)
        result.reasoning = reasoning.to_dict()
        return OK, "", str(result.reasoning.get("backend", result.reasoning.get("tier", "")))

    def assemble_report(self) -> None:
        """The headline summary for the results view, History and PDF."""
        self.result.summary = summarise(self.result)

    def set_status(self) -> None:
        """The overall status from the stage records, the gate and the domain rule."""
        self.result.status = overall_status(self.result)


def _has_deviation_model(detector: Any) -> bool:
    return getattr(detector, "patch_model", None) is not None and hasattr(detector, "score_with_activations")


def _score_with_spatial_map(result: AnalysisResult, detector: Any, image: np.ndarray) -> bool:
    """Score the study from the spatial anomaly map's own forward pass, keeping the map for the maps stage.

    The map runs the detector's full forward pass (VGG16 → VAE → ViT → fused score) before its backward
    pass, so scoring separately would run VGG16, the costliest network, twice. Returns False (and leaves
    the result untouched) when the detector cannot build a result from parts or the map cannot be made;
    the caller then scores with `detector.score`, and the maps stage reports any map failure itself.
    """
    if not hasattr(detector, "result_from_parts"):
        return False
    from medsight.explain.anomaly_map import spatial_anomaly_map

    start = time.perf_counter()
    try:
        heatmap = spatial_anomaly_map(detector, image, render=False)
    except Exception as exc:  # noqa: BLE001 - the plain score path below decides whether the stage fails
        log.warning("spatial anomaly map failed in the anomaly stage: %s", exc)
        return False
    ms = (time.perf_counter() - start) * 1000
    details = heatmap.details
    anomaly = detector.result_from_parts(
        heatmap.score, details["recon_error"], details["kl_divergence"], details["vit_score"],
        details["components"], timings={"score_and_spatial_map": ms, "total": ms},
    )
    result.anomaly = anomaly.to_dict()
    result.objects.setdefault("heatmaps", {})["spatial_anomaly"] = heatmap
    return True


def _gradcam_unrendered(classifier: Any, image: np.ndarray, label: str, activations: Any = None):
    """A label's Grad-CAM without drawing its panels, when the classifier can defer the drawing.

    With the pathology stage's activations (and a classifier that accepts them), the map comes from that
    pass instead of a new forward and backward pass.
    """
    parameters = inspect.signature(classifier.gradcam).parameters
    options: dict[str, Any] = {"render": False} if "render" in parameters else {}
    if activations is not None and "activations" in parameters:
        options["activations"] = activations
    return classifier.gradcam(image, label, **options)


def compute_maps(result: AnalysisResult, image: np.ndarray, which: str = "key", labels: list[str] | None = None) -> list[str]:
    """Compute heatmaps into `result.maps` (dicts) and `result.objects["heatmaps"]` (arrays).

    The three-panel figures are not drawn here: drawing takes longer than computing a map, so each
    `HeatmapResult` draws itself the first time it is shown or exported (`png()` / `ensure_panels()`).

    The key anomaly map is the deviation-from-normal map when the detector has a model of normal features
    (drawn from the anomaly stage's activations, so VGG16 does not run again), else the Grad-CAM spatial
    map; "all" adds the Grad-CAM map and the paper's attention map. A spatial anomaly map already in
    `result.objects["heatmaps"]` (made by the anomaly stage from its own pass) is kept, not recomputed.

    Returns the keys of the maps computed. Used by the pipeline and, lazily, by the Heatmap page.
    """
    heatmaps = result.objects.setdefault("heatmaps", {})
    done: list[str] = []
    detector = result.objects.get("detector")
    if detector is not None:
        deviation = _has_deviation_model(detector)
        if deviation:
            from medsight.explain.anomaly_map import patch_deviation_map

            heatmaps["patch_deviation"] = patch_deviation_map(detector, image, render=False,
                                                              precomputed=result.objects.get("anomaly_pass"))
            done.append("patch_deviation")
        if not deviation or which == "all":
            if "spatial_anomaly" not in heatmaps:
                from medsight.explain.anomaly_map import spatial_anomaly_map

                heatmaps["spatial_anomaly"] = spatial_anomaly_map(detector, image, render=False)
            done.append("spatial_anomaly")
        if which == "all":
            from medsight.explain.attention import paper_attention_map

            heatmaps["paper_attention"] = paper_attention_map(detector, image, render=False)
            done.append("paper_attention")
    classifier = result.objects.get("classifier")
    if classifier is not None and result.pathology:
        if labels is None:
            probabilities = result.pathology.get("probabilities", {})
            positives = sorted(result.pathology.get("positives", []), key=lambda k: -probabilities.get(k, 0.0))
            labels = list(probabilities) if which == "all" else positives[:MAX_PATHOLOGY_MAPS]
        for label in labels:
            key = f"pathology:{label}"
            heatmaps[key] = _gradcam_unrendered(classifier, image, label, result.objects.get("pathology_pass"))
            done.append(key)
    for key in done:
        result.maps[key] = heatmaps[key].to_dict()
    return done


def overall_status(result: AnalysisResult) -> str:
    """COMPLETE / PARTIAL / WITHHELD / REFUSED / FAILED from the stage records and the gate and domain rule."""
    if result.gate and result.gate.get("decision") == "refused":
        return STATUS_REFUSED
    image_shown = bool(result.anomaly or result.pathology)
    if result.withheld and not image_shown:
        return STATUS_WITHHELD
    useful = bool(image_shown or result.nlp)
    if not useful:
        return STATUS_FAILED
    problems = [
        s for s in result.stages
        if s.status == FAILED or (s.status == SKIPPED and s.name.startswith("vision: ") and s.message != "maps not requested")
    ]
    return STATUS_PARTIAL if problems or result.withheld else STATUS_COMPLETE


def summarise(result: AnalysisResult) -> dict:
    """Headline facts for the results view, History list and PDF."""
    summary: dict[str, Any] = {"headline": [], "tiers": {}}
    gate = result.gate or {}
    if gate.get("decision") == "refused":
        summary["headline"].append(f"Not analysed: {gate.get('reason') or 'the input gate refused this image'}")
    elif gate.get("decision") == "overridden":
        summary["headline"].append(f"Analysed against the input gate's advice (overridden by "
                                   f"{gate.get('overridden_by') or 'the radiologist'}): {gate.get('reason', '')}")
    if result.withheld:
        summary["withheld"] = sorted(result.withheld)
        summary["headline"].append("Withheld: " + "; ".join(w["what"] for w in result.withheld.values())
                                   + " — the loaded weights cannot speak about this image")
    if result.anomaly:
        a = result.anomaly
        verdict = "outside normal range" if a.get("is_anomalous") else "within normal range"
        summary["headline"].append(
            f"Anomaly score {a.get('fused_score', 0):.3f} (threshold {a.get('threshold', 0):.3f}): {verdict}"
        )
        if a.get("peak_deviation") is not None and a.get("deviation_threshold") is not None:
            where = "above" if a.get("deviation_unusual") else "within"
            summary["headline"].append(f"Peak deviation from normal {a['peak_deviation']:.1f}: {where} the normal "
                                       f"range (≤ {a['deviation_threshold']:.1f})")
    if result.pathology:
        probs = result.pathology.get("probabilities", {})
        positives = result.pathology.get("positives", [])
        if positives:
            listed = ", ".join(f"{p} {probs.get(p, 0):.2f}" for p in positives)
            summary["headline"].append(f"Pathology classifier positive: {listed}")
        else:
            summary["headline"].append("Pathology classifier: no label above its operating threshold")
    if result.fusion:
        risk = result.fusion.get("risk") or {}
        level = risk.get("level") if isinstance(risk, dict) else risk
        if level:
            summary["risk"] = level
            summary["headline"].append(f"Risk: {level}")
    for slot, prov in result.models.items():
        if prov:
            summary["tiers"][slot] = prov.get("tier", "")
    summary["demo_models"] = sorted(k for k, v in summary["tiers"].items() if v == "demo" and k not in result.withheld)
    return summary
