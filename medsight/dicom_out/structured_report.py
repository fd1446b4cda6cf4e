"""The analysis as a Comprehensive SR (TID 1500 Measurement Report), with the device as observer.

One measurement group (TID 1501) per thing the analysis says: the input gate's decision, each image model's
scores against its thresholds (with the model's name, version and tier as its algorithm), each withheld
model output (said to be withheld, with no number), the radiologist's measurements and the report
verification. Numbers come only from what the analysis shows: a withheld or refused output writes none.
Concepts without a standard code use the private coding scheme `99MEDSIGHT`.
"""

from __future__ import annotations

from typing import Any

from medsight.dicom_out.common import (
    DEVICE_NAME,
    MANUFACTURER,
    NOT_FOR_DIAGNOSIS,
    SERIES_REPORT_SR,
    Filing,
    ModelDescription,
    contributing_equipment,
    device_uid,
    lt,
    mark_derived,
    model_description,
)

SCHEME = "99MEDSIGHT"

GATE_DECISIONS = {
    "accepted": "Accepted as a frontal chest radiograph",
    "refused": "Refused: not a frontal chest radiograph",
    "overridden": "Refused, then overridden by the radiologist",
}


def concept(value: str, meaning: str) -> Any:
    """A concept of the product's private coding scheme."""
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=SCHEME, meaning=meaning[:64])


def _code(value: str, scheme: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


PLAIN_CHEST_XRAY = ("399208008", "SCT", "Plain chest X-ray")
NO_UNITS = ("1", "UCUM", "no units")


def _text(name: Any, value: str, relationship: str = "CONTAINS") -> Any:
    from highdicom.sr import TextContentItem

    return TextContentItem(name=name, value=lt(str(value), 1024), relationship_type=relationship)


def _number(name: Any, value: float, unit: tuple[str, str, str] = NO_UNITS, algorithm: Any = None) -> Any:
    from highdicom.sr import Measurement

    return Measurement(name=name, value=float(value), unit=_code(*unit), algorithm_id=algorithm)


def _group(identifier: str, *, measurements=None, evaluations=None, algorithm=None, source_header=None,
           texts=None) -> Any:
    """A TID 1501 group; free-text statements are added as TEXT items after the coded content."""
    from highdicom.sr import (
        MeasurementsAndQualitativeEvaluations,
        QualitativeEvaluation,
        SourceImageForMeasurementGroup,
        TrackingIdentifier,
    )
    from pydicom.uid import generate_uid

    images = [SourceImageForMeasurementGroup.from_source_image(source_header)] if source_header is not None else None
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=str(generate_uid()), identifier=identifier[:64]),
        algorithm_id=algorithm, measurements=measurements or None,
        qualitative_evaluations=[QualitativeEvaluation(n, v) for n, v in (evaluations or [])] or None,
        source_images=images,
    )
    container = group[0]
    for name, value in texts or []:
        container.ContentSequence.append(_text(name, value))
    return group


def _algorithm(model: ModelDescription) -> Any:
    from highdicom.sr import AlgorithmIdentification

    return AlgorithmIdentification(name=model.title[:64], version=model.version[:64],
                                   parameters=[f"tier {model.tier.upper()}"])


def _gate_group(analysis: dict, source_header: Any) -> Any | None:
    gate = analysis.get("gate") or {}
    decision = gate.get("decision")
    if not decision:
        return None
    texts = [(concept("gate-reason", "Input gate reason"), gate.get("reason") or "")]
    if gate.get("code"):
        texts.append((concept("gate-code", "Input gate code"), gate["code"]))
    if decision == "overridden":
        texts.append((concept("gate-override", "Overridden by"), gate.get("overridden_by") or "the radiologist"))
    status = str(analysis.get("status") or "")
    evaluations = [(concept("gate-decision", "Input gate decision"),
                    concept(f"gate-{decision}", GATE_DECISIONS.get(decision, decision)))]
    if status:
        evaluations.append((concept("analysis-status", "Analysis status"), concept(f"status-{status.lower()}", status)))
    return _group("Input gate", evaluations=evaluations, texts=[t for t in texts if t[1]], source_header=source_header)


def _anomaly_group(analysis: dict, source_header: Any) -> Any | None:
    anomaly = analysis.get("anomaly")
    if not anomaly or anomaly.get("fused_score") is None:
        return None
    model = model_description(analysis, "anomaly.detector")
    measurements = [_number(concept("anomaly-score", "Fused anomaly score"), anomaly["fused_score"])]
    if anomaly.get("threshold") is not None:
        measurements.append(_number(concept("anomaly-threshold", "Anomaly score threshold"), anomaly["threshold"]))
    if anomaly.get("peak_deviation") is not None:
        measurements.append(_number(concept("peak-deviation", "Peak deviation from normal"), anomaly["peak_deviation"]))
        if anomaly.get("deviation_threshold") is not None:
            measurements.append(_number(concept("deviation-threshold", "Peak deviation threshold"),
                                        anomaly["deviation_threshold"]))
    outside = bool(anomaly.get("is_anomalous"))
    verdict = concept("outside-normal", "Outside normal range") if outside else concept("within-normal", "Within normal range")
    return _group("Anomaly detector", measurements=measurements, algorithm=_algorithm(model), source_header=source_header,
                  evaluations=[(concept("anomaly-verdict", "Anomaly score verdict"), verdict)],
                  texts=[(concept("model-tier", "Model tier"), model.tier.upper())])


def _pathology_group(analysis: dict, source_header: Any) -> Any | None:
    from pydicom.sr.codedict import codes

    pathology = analysis.get("pathology")
    probabilities = (pathology or {}).get("probabilities") or {}
    if not probabilities:
        return None
    model = model_description(analysis, "pathology.classifier")
    thresholds = pathology.get("thresholds") or {}
    positives = set(pathology.get("positives") or [])
    measurements, evaluations = [], []
    for label, probability in probabilities.items():
        if probability is None:
            continue
        measurements.append(_number(concept(f"p:{label}", f"Probability of {label}"), probability))
        if thresholds.get(label) is not None:
            measurements.append(_number(concept(f"t:{label}", f"Operating threshold for {label}"), thresholds[label]))
        present = codes.SCT.Present if label in positives else codes.SCT.Absent
        evaluations.append((concept(f"f:{label}", label), present))
    return _group("Pathology classifier", measurements=measurements, evaluations=evaluations,
                  algorithm=_algorithm(model), source_header=source_header,
                  texts=[(concept("model-tier", "Model tier"), model.tier.upper())])


def _withheld_groups(analysis: dict) -> list[Any]:
    """Each withheld output: that it was withheld and why; no number."""
    groups = []
    for slot, entry in (analysis.get("withheld") or {}).items():
        model = model_description(analysis, slot)
        reason = " ".join(str(entry.get(k) or "") for k in ("reason", "how_to_get_real")).strip()
        groups.append(_group(
            f"{entry.get('what') or slot} (withheld)", algorithm=_algorithm(model),
            evaluations=[(concept("output-status", "Output status"),
                          concept("withheld", "Withheld: no value reported"))],
            texts=[(concept("withheld-reason", "Reason withheld"), reason or "the weights cannot speak about this image")],
        ))
    return groups


def _summary_group(analysis: dict) -> Any | None:
    risk = (analysis.get("summary") or {}).get("risk")
    if not risk:
        return None
    return _group("Fusion and risk", evaluations=[(concept("risk-level", "Risk level"),
                                                   concept(f"risk-{str(risk).lower()}", str(risk)))])


def _comparison_group(analysis: dict) -> Any | None:
    """"Compared with study of DATE": the interval change of each score both analyses have (numbers only there)."""
    comparison = analysis.get("comparison")
    if not comparison:
        return None
    # d:<label> like the scores' p:<label>, short enough for CodeValue (16 characters) with the usual labels.
    differences = [_number(concept(f"d:{c['score'].split(':')[-1]}", f"Interval change of {c['name']}"),
                           c["difference"]) for c in comparison.get("changes") or [] if c.get("difference") is not None]
    texts = [(concept("comparison", "Comparison with prior study"), comparison.get("summary") or "")]
    texts += [(concept("interval-change", "Interval change"), line) for line in comparison.get("lines") or []]
    return _group(comparison.get("title") or "Comparison with prior study", measurements=differences, texts=texts)


def _measurement_groups(measurements: list[dict] | None, source_header: Any) -> list[Any]:
    """The radiologist's length and angle measurements, each with its calibration source."""
    from pydicom.sr.codedict import codes

    if not measurements:
        return []
    items = []
    for m in measurements:
        if m.get("unit") == "px":  # an uncalibrated length has no size in mm: it stays out of the SR
            continue
        kind = str(m.get("kind", "length")).lower()
        name, unit = (codes.SCT.Angle, ("deg", "UCUM", "degree")) if kind == "angle" else (
            codes.SCT.Length, ("mm", "UCUM", "millimeter"))
        number = _number(name, float(m["value"]), unit)
        calibration = m.get("calibration") or ("not applicable" if kind == "angle" else "not recorded")
        properties = [_text(concept("calibration", "Calibration source"), calibration, "HAS PROPERTIES")]
        if m.get("label"):
            properties.append(_text(concept("measurement-label", "Measurement label"), m["label"], "HAS PROPERTIES"))
        number[0].ContentSequence = [*getattr(number[0], "ContentSequence", []), *properties]
        items.append(number)
    if not items:
        return []
    return [_group("Radiologist measurements", measurements=items, source_header=source_header)]


def _verification_group(verification: dict | None) -> Any | None:
    """The report verification's outcome: counts, and each discrepancy it found."""
    if not verification:
        return None
    summary = verification.get("summary") or {}
    discrepancies = verification.get("discrepancies") or []
    count = ("{count}", "UCUM", "count")
    measurements = [_number(concept(f"verify-{key}", meaning), summary[key], count) for key, meaning in (
        ("checks_passed", "Checks passed"), ("checks_failed", "Checks failed"), ("discrepancies", "Discrepancies"))
        if summary.get(key) is not None]
    clean = not discrepancies and not summary.get("checks_failed")
    outcome = concept("verify-clean", "No discrepancy found") if clean else concept("verify-issues", "Discrepancies found")
    texts = [(concept("discrepancy", "Discrepancy"),
              f"[{d.get('severity', '')}] {d.get('message', '')}" if isinstance(d, dict) else str(d)) for d in discrepancies]
    texts.append((concept("verify-backend", "Verified by"), str(verification.get("backend") or "rules")))
    return _group("Report verification", measurements=measurements, texts=texts,
                  evaluations=[(concept("verify-outcome", "Report verification outcome"), outcome)])


def report(analysis: dict, filing: Filing, source_header: Any, evidence: list[Any], *,
           measurements: list[dict] | None = None, verification: dict | None = None,
           verifying_observer: str | None = None, verifying_organization: str = "", models: list[ModelDescription]
           ) -> Any:
    """The Comprehensive SR of an analysis, filed with `filing` and referencing `source_header`.

    VerificationFlag is UNVERIFIED (and PreliminaryFlag PRELIMINARY) unless `verifying_observer` names the
    radiologist who signed it.
    """
    from highdicom.sr import (
        ComprehensiveSR,
        DeviceObserverIdentifyingAttributes,
        MeasurementReport,
        ObservationContext,
        ObserverContext,
    )
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    shown = analysis.get("status") not in ("REFUSED",)
    groups = [_gate_group(analysis, source_header), _summary_group(analysis)]
    if shown:
        groups += [_anomaly_group(analysis, source_header), _pathology_group(analysis, source_header)]
    groups += _withheld_groups(analysis)
    groups.append(_comparison_group(analysis) if shown else None)
    groups += _measurement_groups(measurements, source_header)
    groups.append(_verification_group(verification))
    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=device_uid(), name=DEVICE_NAME, manufacturer_name=MANUFACTURER, model_name=DEVICE_NAME),
    )
    content = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=_code(*PLAIN_CHEST_XRAY),
        imaging_measurements=[g for g in groups if g is not None],
        referenced_images=[source_header] if _library_ready(source_header) else None,
    )
    verified = bool(verifying_observer)
    sr = ComprehensiveSR(
        evidence=evidence, content=content, series_instance_uid=str(generate_uid()), series_number=SERIES_REPORT_SR,
        sop_instance_uid=str(generate_uid()), instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        is_final=verified, is_verified=verified, verifying_observer_name=verifying_observer if verified else None,
        verifying_organization=(verifying_organization or "MedSight Workstation user") if verified else None,
        contributing_equipment=contributing_equipment(models) or None,
    )
    mark_derived(sr, filing, f"MedSight AI results (SR) - {NOT_FOR_DIAGNOSIS}", models)
    sr.CodingSchemeIdentificationSequence = [_scheme_identification()]
    return sr


def _scheme_identification() -> Any:
    """Declares the private coding scheme the report's product-specific concepts use."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = "MedSight Workstation concepts"
    item.CodingSchemeResponsibleOrganization = MANUFACTURER
    return item


def _library_ready(header: Any) -> bool:
    """Whether the image library can describe the source (each modality needs its own geometry attributes)."""
    from highdicom.sr import ImageLibraryEntryDescriptors

    try:
        ImageLibraryEntryDescriptors(header)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return False  # the reference to the source instance still stands in each measurement group
    return True
