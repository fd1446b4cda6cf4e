"""Radiology lexicon as data: the terms the entity ruler matches and the canonical names they map to.

Everything here is plain data so that it can be read, reviewed and extended by a radiologist without
touching the matching code. Matching is case-insensitive on whole tokens (spaCy `LOWER`).

Canonical finding names follow the product's label set: the synthetic-phantom findings
("consolidation", "nodule", "effusion", "pneumothorax", "cardiomegaly") and torchxrayvision's 18 labels,
written lower-case with underscores ("Pleural_Thickening" → "pleural_thickening",
"Lung Opacity" → "lung_opacity").
"""

from __future__ import annotations

import re

# Label names used for entities.
FINDING = "FINDING"  # an imaging finding (canonical names below)
DISEASE = "DISEASE"  # a clinical diagnosis that is not itself an image label
ANATOMY = "ANATOMY"
DEVICE = "DEVICE"
SYMPTOM = "SYMPTOM"
MEDICATION = "MEDICATION"
ENTITY_LABELS = (FINDING, DISEASE, ANATOMY, DEVICE, SYMPTOM, MEDICATION)

# torchxrayvision's 18 labels → canonical names used across the product.
XRV_LABELS = (
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis",
    "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia",
    "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum",
)
PHANTOM_FINDINGS = ("consolidation", "nodule", "effusion", "pneumothorax", "cardiomegaly")

# canonical imaging finding → phrases that name it (singular and plural where both occur in reports).
FINDINGS: dict[str, list[str]] = {
    "consolidation": [
        "consolidation", "consolidations", "consolidative opacity", "consolidative opacities",
        "airspace disease", "air space disease", "airspace consolidation", "air space consolidation",
        "airspace consolidations", "alveolar consolidation", "focal consolidation", "air bronchograms",
        "consolidative changes", "consolidated",
    ],
    "pneumonia": [
        "pneumonia", "pneumonias", "bronchopneumonia", "pneumonitis", "aspiration pneumonia",
        "lobar pneumonia", "multifocal pneumonia",
    ],
    "infiltration": ["infiltrate", "infiltrates", "infiltration", "infiltrations", "interstitial infiltrate"],
    "atelectasis": [
        "atelectasis", "atelectases", "atelectatic", "atelectatic change", "atelectatic changes",
        "subsegmental atelectasis", "discoid atelectasis", "plate-like atelectasis", "platelike atelectasis",
        "lobar collapse", "lung collapse", "volume loss",
    ],
    "effusion": [
        "pleural effusion", "pleural effusions", "effusion", "effusions", "pleural fluid",
        "hydrothorax", "blunting of the costophrenic angle", "costophrenic angle blunting",
        "blunting of the costophrenic angles", "blunted costophrenic angle", "blunted costophrenic angles",
        "costophrenic blunting",
    ],
    "pneumothorax": [
        "pneumothorax", "pneumothoraces", "pneumothoraxes", "pleural air", "hydropneumothorax", "hemopneumothorax",
    ],
    "edema": [
        "edema", "pulmonary edema", "interstitial edema", "alveolar edema", "vascular congestion",
        "pulmonary vascular congestion", "pulmonary congestion", "cephalization", "kerley b lines",
        "fluid overload", "heart failure", "congestive heart failure", "chf", "congestion", "congestive changes",
        "vascular congestive changes", "central vascular congestion", "pulmonary venous congestion",
        "venous congestion", "vascular engorgement", "pulmonary vascular engorgement", "engorged", "engorgement",
        "increased lung vascularity", "increased pulmonary vascularity", "increased vascularity",
        "pulmonary venous hypertension", "vascular prominence", "central vascular prominence",
        "pulmonary vascular prominence", "central pulmonary vascular prominence", "prominence of the central vasculature",
        "prominent central vasculature", "prominence of the pulmonary vascularity", "prominence of the pulmonary vasculature",
        "indistinct vascular margination", "vascular redistribution", "failure", "interstitial pulmonary edema",
    ],
    "emphysema": [
        "emphysema", "emphysematous", "emphysematous changes", "bullous emphysema", "bulla", "bullae",
    ],
    "fibrosis": [
        "fibrosis", "fibrotic", "fibrotic changes", "pulmonary fibrosis", "interstitial fibrosis",
        "honeycombing", "interstitial lung disease", "ild", "usual interstitial pneumonia",
    ],
    "cardiomegaly": [
        "cardiomegaly", "cardiac enlargement", "enlarged heart", "enlarged cardiac silhouette",
        "enlargement of the cardiac silhouette", "enlargement of cardiac silhouette", "enlarged cardiac contour", "cardiac silhouette is enlarged",
        "heart is enlarged", "heart size is enlarged",
    ],
    "nodule": [
        "nodule", "nodules", "nodular opacity", "nodular opacities", "nodular density", "pulmonary nodule",
        "pulmonary nodules", "lung nodule", "lung nodules", "micronodules", "nodular",
        # a calcified nodule is a nodule (the indexers code it Nodule + Calcinosis more often than granuloma)
        "calcified nodule", "calcified nodules", "nodular opacities", "nodular densities",
    ],
    "mass": ["mass", "masses", "lung mass", "pulmonary mass", "mass lesion", "mass lesions", "tumor", "tumour"],
    "lung_lesion": ["lesion", "lesions", "lung lesion", "pulmonary lesion", "cavitary lesion", "cavitation", "cavity"],
    "hernia": ["hernia", "hiatal hernia", "hiatus hernia", "diaphragmatic hernia", "bochdalek hernia"],
    "fracture": ["fracture", "fractures", "fractured", "rib fracture", "rib fractures", "compression fracture"],
    "lung_opacity": [
        "opacity", "opacities", "opacification", "pulmonary opacity", "pulmonary opacities", "lung opacity",
        "hazy opacity", "ground glass", "ground-glass", "ground glass opacity", "ground-glass opacity",
        "ground glass opacities", "ground-glass opacities",
        # "airspace opacity" is not consolidation: it is what atelectasis, pneumonia, edema or overlapping
        # soft tissue look like (CheXpert and the Indiana indexers file it as opacity).
        "airspace opacity", "airspace opacities", "air space opacity", "air space opacities", "alveolar opacity",
        "alveolar opacities",
        "interstitial opacities", "interstitial markings", "increased interstitial markings",
        "reticular opacities", "streaky opacities",
    ],
    "pleural_thickening": [
        "pleural thickening", "pleural plaque", "pleural plaques", "pleural scarring",
        "apical pleural thickening", "apical capping", "pleural calcification", "pleural calcifications",
    ],
    "enlarged_cardiomediastinum": [
        "widened mediastinum", "mediastinal widening", "enlarged cardiomediastinal silhouette",
        "widening of the mediastinum", "mediastinal enlargement", "enlarged mediastinum",
        "prominent mediastinum",
    ],
    # Findings outside the image label set, kept so they are not mistaken for anything else.
    "granuloma": [
        "granuloma", "granulomas", "granulomata", "calcified granuloma", "calcified granulomas",
        "granulomatous disease", "old granulomatous disease", "prior granulomatous disease",
        "granulomatous", "granulomatous process", "granulomatous infection", "healed granulomatous disease",
    ],
    "scarring": ["scarring", "scar", "scars", "fibrotic scarring", "apical scarring", "parenchymal scarring"],
    "hyperinflation": [
        "hyperinflation", "hyperinflated", "hyperexpanded", "hyperexpansion", "hyperaeration",
        "flattening of the diaphragms", "flattened diaphragms", "flattened hemidiaphragms", "hyperaerated",
        "hyperlucent", "hyperlucency", "increased retrosternal airspace", "flattening of hemidiaphragms",
        "flattening of the hemidiaphragms", "overinflated", "overinflation",
    ],
    "adenopathy": ["adenopathy", "lymphadenopathy", "hilar adenopathy", "mediastinal adenopathy", "hilar enlargement"],
    "pneumoperitoneum": ["pneumoperitoneum", "free air", "free intraperitoneal air", "free air under the diaphragm"],
    "bronchiectasis": ["bronchiectasis", "bronchiectatic", "bronchiectatic changes"],
    "bronchial_thickening": ["bronchial wall thickening", "peribronchial thickening", "peribronchial cuffing"],
    # The same words in another organ: kept apart so they are not read as the lung finding.
    "pericardial_effusion": ["pericardial effusion", "pericardial effusions", "pericardial fluid", "cardiac fluid"],
    "subcutaneous_emphysema": [
        "subcutaneous emphysema", "subcutaneous air", "soft tissue emphysema", "soft tissue air",
        "mediastinal emphysema", "pneumomediastinum",
    ],
    "soft_tissue_edema": [
        "soft tissue edema", "soft tissue swelling", "subcutaneous edema", "chest wall edema", "anasarca",
        "soft tissue thickening",
    ],
    # Findings outside the lungs that make a study not normal (spine, aorta, lung volumes, diaphragm).
    "degenerative_changes": [
        "degenerative changes", "degenerative change", "degenerative disease", "degenerative disc disease",
        "degenerative joint disease", "degeneration", "degenerative", "spondylosis", "spondylotic", "osteophyte",
        "osteophytes", "osteophytosis", "spurring", "arthritic changes", "arthritis", "osteoarthritis", "dish",
        "diffuse idiopathic skeletal hyperostosis", "hyperostosis", "endplate changes", "arthropathy",
    ],
    "scoliosis": [
        "scoliosis", "dextroscoliosis", "levoscoliosis", "rotatory scoliosis", "kyphoscoliosis",
        "curvature of the spine", "curvature of the thoracic spine", "spine curvature", "spinal curvature",
        "dextrocurvature", "levocurvature", "dextroconvex", "levoconvex",
    ],
    "kyphosis": ["kyphosis", "kyphotic", "increased kyphosis", "exaggerated kyphosis", "thoracic kyphosis"],
    "deformity": [
        "deformity", "deformities", "compression deformity", "compression deformities", "wedge deformity",
        "wedging", "height loss", "loss of height", "endplate depression", "endplate depressions",
        "pectus excavatum", "pectus carinatum", "pectus deformity", "vertebral body height loss",
    ],
    "aortic_atherosclerosis": [
        "atherosclerosis", "atherosclerotic", "atherosclerotic changes", "atherosclerotic disease",
        "atherosclerotic calcification", "atherosclerotic calcifications", "aortic calcification",
        "aortic calcifications", "vascular calcification", "vascular calcifications", "calcified aorta",
    ],
    "calcification": ["calcification", "calcifications", "calcified", "calcific", "calcified lymph nodes"],
    "aortic_tortuosity": [
        "tortuous", "tortuosity", "ectatic", "ectasia", "unfolding", "unfolded", "aortic ectasia",
        "dilated aorta", "aortic aneurysm", "aneurysm", "aneurysmal", "dilatation of the aorta",
    ],
    "low_lung_volumes": [
        "low lung volumes", "low lung volume", "low volumes", "low volume", "hypoinflation", "hypoinflated",
        "hypoventilation", "hypoventilatory", "underinflated", "underinflation", "poor inspiration",
        "poor inspiratory effort", "shallow inspiration", "diminished lung volumes", "decreased lung volumes",
        "reduced lung volumes", "bronchovascular crowding", "vascular crowding", "crowding",
    ],
    "elevated_hemidiaphragm": [
        "elevated hemidiaphragm", "elevated right hemidiaphragm", "elevated left hemidiaphragm",
        "elevation of the right hemidiaphragm", "elevation of the left hemidiaphragm",
        "elevation of the hemidiaphragm", "diaphragm elevation", "elevated diaphragm", "eventration",
        "elevated left diaphragm", "elevated right diaphragm",
    ],
    "costophrenic_blunting": ["blunting", "blunted"],
    # "density" is said of lung, bone, soft tissue and foreign bodies alike: a finding, but no lung label.
    "density": ["density", "densities"],
    "pulmonary_hypertension": [
        "pulmonary hypertension", "pulmonary arterial hypertension", "pulmonary artery hypertension",
        "enlarged pulmonary arteries", "prominent pulmonary arteries", "prominence of the pulmonary arteries",
        "enlarged pulmonary artery", "pulmonary artery enlargement",
    ],
}

# Clinical diagnoses (not image labels) → phrases.
DISEASES: dict[str, list[str]] = {
    "tuberculosis": ["tuberculosis", "tb", "tuberculous", "mycobacterial infection", "positive ppd", "positive tb test", "latent tb"],
    "lung_cancer": [
        "lung cancer", "lung carcinoma", "bronchogenic carcinoma", "malignancy", "malignant",
        "neoplasm", "carcinoma", "adenocarcinoma", "squamous cell carcinoma", "small cell carcinoma",
        "metastasis", "metastases", "metastatic disease", "lymphoma",
    ],
    "pulmonary_embolism": ["pulmonary embolism", "pulmonary emboli", "pulmonary embolus", "pe", "thromboembolism", "dvt"],
    "copd": ["copd", "chronic obstructive pulmonary disease", "chronic obstructive lung disease", "obstructive lung disease"],
    "asthma": ["asthma", "asthmatic", "reactive airway disease", "reactive airways disease", "status asthmaticus"],
    "bronchitis": ["bronchitis", "acute bronchitis", "chronic bronchitis", "bronchiolitis"],
    "ards": ["ards", "acute respiratory distress syndrome", "respiratory distress syndrome"],
    "covid19": ["covid", "covid-19", "covid 19", "sars-cov-2", "coronavirus", "viral pneumonia"],
    "sarcoidosis": ["sarcoidosis", "sarcoid"],
    "lung_abscess": ["abscess", "lung abscess", "empyema"],
}

ANATOMY_TERMS: dict[str, list[str]] = {
    "lung": ["lung", "lungs", "lung field", "lung fields", "lung parenchyma", "parenchyma"],
    "lobe": [
        "right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe", "left lower lobe",
        "lingula", "upper lobe", "lower lobe", "middle lobe", "rul", "rml", "rll", "lul", "lll",
    ],
    "lung_zone": [
        "lung base", "lung bases", "base", "bases", "apex", "apices", "lung apex", "lung apices", "midlung",
        "mid lung", "perihilar", "retrocardiac", "upper lung zone", "lower lung zone", "basilar", "bibasilar",
    ],
    "pleura": ["pleura", "pleural space", "pleural spaces", "costophrenic angle", "costophrenic angles", "costophrenic sulcus"],
    "heart": ["heart", "cardiac silhouette", "cardiomediastinal silhouette", "cardiac contour", "cardiac contours", "heart size"],
    "mediastinum": ["mediastinum", "mediastinal contour", "mediastinal contours", "hilum", "hila", "hilar", "trachea"],
    "vessels": ["aorta", "aortic arch", "pulmonary vasculature", "pulmonary vascularity", "pulmonary arteries"],
    "diaphragm": ["diaphragm", "diaphragms", "hemidiaphragm", "hemidiaphragms"],
    "bones": ["rib", "ribs", "spine", "thoracic spine", "clavicle", "clavicles", "sternum", "scapula", "humerus", "osseous structures", "bony thorax"],
    "soft_tissue": ["soft tissues", "chest wall", "breast"],
}

DEVICES: dict[str, list[str]] = {
    "endotracheal_tube": ["endotracheal tube", "ett", "et tube", "ettube"],
    "tracheostomy": ["tracheostomy", "tracheostomy tube", "trach tube"],
    "enteric_tube": ["nasogastric tube", "ng tube", "orogastric tube", "og tube", "feeding tube", "dobhoff", "enteric tube"],
    "central_line": [
        "central venous catheter", "central line", "central venous line", "picc", "picc line",
        "ij catheter", "subclavian catheter", "dual-lumen central venous catheter", "catheter", "venous catheter",
        "port", "mediport", "port-a-cath", "power port", "catheter tip", "tip", "svc", "cavoatrial junction",
        "caval atrial junction", "cavoatrial", "dialysis catheter", "swan-ganz",
    ],
    "chest_tube": ["chest tube", "chest tubes", "pleural drain", "pigtail catheter", "thoracostomy tube"],
    "cardiac_device": ["pacemaker", "aicd", "icd", "defibrillator", "pacer", "pacing leads", "pacemaker leads", "cardiac device"],
    "surgical_material": [
        "sternotomy wires", "sternotomy sutures", "sternotomy", "surgical clips", "clips", "coronary bypass clips",
        "cabg", "surgical staples", "staples", "prosthetic valve", "valve replacement", "stent", "stents",
        "fixation hardware", "hardware", "foreign body", "projectile fragment", "sutures", "suture material",
        "suture", "postoperative changes", "postsurgical changes", "post-surgical changes", "surgical changes",
        "prosthesis", "prosthetic", "screw", "screws", "fixation", "spinal fusion", "fusion hardware",
        "arthroplasty", "cholecystectomy clips", "shunt", "shunt tubing", "vp shunt", "stimulator",
        "nerve stimulator", "nipple ring", "piercing", "piercings", "wires", "wire",
    ],
    "monitoring": ["monitor leads", "telemetry leads", "ecg leads", "ekg leads", "leads", "electrodes", "telemetry"],
    "tube": ["gastrostomy tube", "g-tube", "tube", "tubes", "drain", "drains"],
}

SYMPTOMS: dict[str, list[str]] = {
    "cough": ["cough", "coughing", "productive cough", "dry cough", "nonproductive cough"],
    "dyspnea": ["dyspnea", "dyspnoea", "shortness of breath", "sob", "breathlessness", "short of breath", "difficulty breathing", "dyspneic"],
    "chest_pain": ["chest pain", "pleuritic chest pain", "chest tightness", "chest discomfort"],
    "fever": ["fever", "fevers", "febrile", "pyrexia"],
    "hemoptysis": ["hemoptysis", "haemoptysis", "coughing up blood", "blood in sputum", "bloody sputum"],
    "wheezing": ["wheezing", "wheeze", "wheezes"],
    "sputum": ["sputum", "sputum production", "phlegm"],
    "hypoxia": ["hypoxia", "hypoxemia", "hypoxaemia", "low oxygen saturation", "desaturation"],
    "tachypnea": ["tachypnea", "tachypnoea", "rapid breathing"],
    "weight_loss": ["weight loss", "losing weight"],
    "night_sweats": ["night sweats"],
    "fatigue": ["fatigue", "tiredness", "malaise", "weakness"],
    "orthopnea": ["orthopnea", "orthopnoea", "paroxysmal nocturnal dyspnea"],
    "chills": ["chills", "rigors"],
    "syncope": ["syncope", "fainting"],
    "cyanosis": ["cyanosis", "cyanotic"],
    "trauma": ["trauma", "fall", "motor vehicle collision", "mvc"],
}

MEDICATIONS: dict[str, list[str]] = {
    "antibiotic": [
        "antibiotic", "antibiotics", "amoxicillin", "augmentin", "azithromycin", "doxycycline", "ceftriaxone",
        "levofloxacin", "moxifloxacin", "piperacillin", "vancomycin", "clarithromycin",
    ],
    "bronchodilator": ["albuterol", "salbutamol", "ipratropium", "tiotropium", "salmeterol", "formoterol", "bronchodilator", "bronchodilators", "inhaler", "nebulizer"],
    "corticosteroid": ["prednisone", "prednisolone", "methylprednisolone", "dexamethasone", "steroids", "corticosteroids", "budesonide", "fluticasone", "inhaled corticosteroid"],
    "diuretic": ["furosemide", "lasix", "diuretic", "diuretics", "torsemide"],
    "anticoagulant": ["heparin", "enoxaparin", "warfarin", "apixaban", "rivaroxaban", "anticoagulation", "anticoagulant"],
    "antituberculous": ["isoniazid", "rifampin", "rifampicin", "pyrazinamide", "ethambutol"],
    "oxygen": ["oxygen", "supplemental oxygen", "home oxygen", "o2"],
    "chemotherapy": ["chemotherapy", "immunotherapy", "radiation therapy", "radiotherapy"],
}

# Phrases that state a finding is ABSENT without a negation cue ("heart size is normal"). Regular
# expressions (case-insensitive) matched per sentence; the matched text becomes a negated entity.
NORMAL_STATEMENTS: dict[str, list[str]] = {
    "cardiomegaly": [
        r"\bnormal (?:heart|cardiac) (?:size|silhouette|contours?)\b",
        r"\bnormal heart\b",
        r"\b(?:heart|cardiac)(?: size| silhouette| contours?| shadow)?(?: and [a-z ]{3,40}?)?,?"
        r" (?:is |are |appears? |remains? )?(?:normal|within normal limits|unremarkable|not enlarged)"
        r"(?! in size and)?",
        r"\bheart is normal in size\b",
        r"\bheart (?:and mediastinum|size) (?:are |is )?(?:normal|unremarkable|within normal limits)\b",
    ],
    "enlarged_cardiomediastinum": [
        r"\bnormal (?:cardio ?mediastinal|mediastinal) (?:silhouette|contours?|size)\b",
        r"\b(?:cardio ?mediastinal|mediastinal)(?: silhouette| contours?| size)?(?: and [a-z ]{3,40}?)?,?"
        r" (?:is |are |appears? |remains? )?(?:normal|within normal limits|unremarkable|stable)",
        r"\bmediastinum (?:is |appears )?(?:normal|unremarkable|within normal limits)\b",
    ],
}

# Phrases asserting a finding through a description rather than its name ("heart size is mildly enlarged").
DESCRIBED_FINDINGS: dict[str, list[str]] = {
    "cardiomegaly": [
        r"\b(?:heart|cardiac silhouette|cardiac size|heart size)(?: size)? (?:is |remains |appears )?"
        r"(?:mildly |moderately |markedly |slightly |severely |borderline )?(?:enlarged|large|prominent)\b",
        r"\b(?:heart|cardiac silhouette|heart size)(?: size)? (?:is |remains |appears )?borderline\b",
        r"\bborderline (?:heart size|cardiac size|enlarged heart)\b",
        r"\b(?:borderline|mild|moderate|marked|severe|slight) (?:cardiomegaly|cardiac enlargement)\b",
        r"\b(?:enlargement|enlarged) of (?:the )?(?:cardiac silhouette|heart)\b",
        r"\bheart size is (?:at )?(?:the )?upper limits? of normal\b",
        r"\bheart is (?:top|upper limits of) normal in size\b",
        r"\b(?:interval )?increase(?:d)? in (?:the )?(?:heart size|cardiac size|size of the (?:heart|cardiac silhouette))\b",
        r"\b(?:heart|cardiac silhouette)(?: size)? (?:is |remains |appears )?(?:mildly |moderately |markedly |slightly |severely )?increased in size\b",
    ],
    "low_lung_volumes": [
        r"\blung volumes (?:are |remain |appear )?(?:low|decreased|diminished|reduced)\b",
    ],
    "elevated_hemidiaphragm": [
        r"\b(?:hemi)?diaphragm (?:is |remains |appears )?(?:mildly |moderately |markedly |slightly )?elevated\b",
        r"\belevation of the (?:right |left )?(?:hemi)?diaphragm\b",
    ],
}
# Of the described findings, those that are borderline and therefore uncertain.
BORDERLINE_PATTERNS: list[str] = [r"upper limits? of normal", r"top normal", r"borderline"]
# Borderline cues that still describe a size within normal limits (the Indiana indexers code "heart size upper
# limits of normal" as normal in 29 of 30 development reports): hedged, but not an abnormality of the report.
WITHIN_NORMAL_CUES = frozenset({"upper limits of normal", "upper limit of normal", "top normal"})

# Laterality words and what they mean (patient side).
LATERALITY_WORDS: dict[str, str] = {
    "left": "left", "right": "right", "bilateral": "bilateral", "bilaterally": "bilateral",
    "both": "bilateral", "bibasilar": "bilateral", "bibasal": "bilateral", "biapical": "bilateral",
    "rul": "right", "rml": "right", "rll": "right", "lul": "left", "lll": "left", "lingula": "left",
    "lingular": "left",
}

SEVERITY_WORDS: dict[str, str] = {
    "minimal": "mild", "trace": "mild", "tiny": "mild", "small": "mild", "mild": "mild", "mildly": "mild",
    "slight": "mild", "slightly": "mild", "moderate": "moderate", "moderately": "moderate",
    "large": "severe", "severe": "severe", "severely": "severe", "marked": "severe", "markedly": "severe",
    "massive": "severe", "extensive": "severe", "tension": "severe", "acute": "severe",
}

# Cues that make a mention uncertain. NegEx (en_clinical) treats "cannot exclude" as a negation; these
# rules run after it and win over it for the cues listed in UNCERTAIN_OVERRIDES_NEGATION.
UNCERTAINTY_PRECEDING: list[str] = [
    "cannot exclude", "can not exclude", "cannot rule out", "can not rule out", "cannot be excluded",
    "not excluded", "possible", "possibly", "may represent", "may reflect", "may be", "might represent",
    "could represent", "could be", "questionable", "question of", "likely", "probable", "probably",
    "suspicious for", "suspected", "concerning for", "suggestive of", "suggests", "suggesting",
    "worrisome for", "differential includes", "versus", "vs", "or possibly", "equivocal", "borderline",
    "presumed", "presumably", "consider", "compatible with", "consistent with", "cannot be ruled out",
    "rule out", "r/o", "evaluate for", "?", "suggest", "raises concern for", "raise concern for",
    "may relate to", "may be related to", "could reflect", "may indicate", "could indicate", "favored to be",
    "question", "cannot be entirely excluded", "difficult to exclude", "difficult to completely exclude",
    "not entirely excluded", "can't exclude", "suspicion for", "suspicion of", "vs.",
]
# Conditional, hypothetical and differential contexts (ConText "hypothetical"): the mention is named but not
# asserted. These triggers reach to the end of their clause ("the differential diagnosis includes round
# pneumonia and parenchymal mass").
# Conditional and historical triggers: the finding is named only as a condition, a question to the reader or a
# past state ("if there is concern for fracture", "to exclude an underlying mass", "history of fracture").
CONDITIONAL_PRECEDING: list[str] = [
    "if", "if there is", "in case of", "whether", "concern for", "clinical concern for", "evaluation for",
    "evaluation of possible", "to evaluate", "to evaluate for", "to assess for", "assess for", "to exclude",
    "exclude", "excluding", "to rule out", "rule-out", "to identify", "identify", "could obscure", "obscure",
    "may obscure", "limits evaluation for", "limits evaluation of", "limited for evaluation of",
    "limited evaluation for", "correlate clinically for", "correlate for", "clinical correlation for",
    "recommend", "recommended", "consider", "considered", "screening for", "followup", "follow-up",
    "to ensure resolution", "to document resolution", "monitor for", "risk of", "risk for", "unclear whether",
    "history of", "with history of", "on a previous", "on the previous", "on previous", "on the prior",
    "on a prior",
]
CONDITIONAL_FOLLOWING: list[str] = [
    "may not be demonstrated", "may not be visible", "may not be seen", "may not be detected",
    "may be missed", "could be missed", "is limited", "are limited", "not well evaluated",
    "cannot be assessed", "cannot be evaluated",
]
# Differential triggers: an abnormality is reported, its cause is open ("differential diagnosis includes
# round pneumonia and parenchymal mass").
DIFFERENTIAL_PRECEDING: list[str] = [
    "differential", "differential diagnosis", "differential diagnosis includes", "differential includes",
    "differential considerations include", "differential considerations", "considerations include",
    "considerations would include", "diagnostic considerations", "would include",
    "in the appropriate clinical setting", "in the correct clinical setting", "clinical setting",
    "is another consideration", "another consideration",
]
DIFFERENTIAL_FOLLOWING: list[str] = [
    "is another consideration", "not excluded", "is a possibility", "is also possible", "is not entirely excluded",
    "is difficult to exclude", "could also be considered", "is considered", "would be difficult to exclude",
    "is more likely", "are not excluded", "is in the differential", "may be present",
]
# Both kinds reach to the end of their clause (ConText "hypothetical").
HYPOTHETICAL_PRECEDING: list[str] = CONDITIONAL_PRECEDING + DIFFERENTIAL_PRECEDING
HYPOTHETICAL_FOLLOWING: list[str] = CONDITIONAL_FOLLOWING + DIFFERENTIAL_FOLLOWING
# Cues under which a mention is not a reported abnormality at all (used when deciding a report reads normal).
CONDITIONAL_CUES = frozenset(CONDITIONAL_PRECEDING + CONDITIONAL_FOLLOWING)

# Words that end a hedge's or condition's scope (ConText terminations). NegEx's own list also ends scope
# at "with" and "secondary to", which would lose the hedge in "may be compatible with mild edema".
CONTEXT_TERMINATIONS: list[str] = [
    ";", ".", "but", "however", "although", "though", "otherwise", "there is", "there are", "there has been",
    "and there", "no", "not", "without", "negative for", "except", "apart from", "other than",
]
# Phrases that contain trigger words but are not triggers.
CONTEXT_PSEUDO_TRIGGERS: list[str] = [
    "no change", "without doubt", "not only", "question of change", "considered stable", "if any",
    "recommend comparison", "possible interval", "or more", "more or less", "either side", "and/or",
    "one or more", "or greater", "no longer",
]
UNCERTAINTY_FOLLOWING: list[str] = [
    "cannot be excluded", "can not be excluded", "not excluded", "is not excluded", "cannot be ruled out",
    "not ruled out", "is not ruled out", "is possible", "is suspected", "not entirely excluded", "?",
    "versus", "vs", "is likely", "is questioned", "could be considered", "is suspected", "are suspected",
    "is questionable", "is not entirely excluded", "are possible", "vs.",
]
# Cues that assert presence with high confidence; they do NOT make a mention uncertain.
ASSERTIVE_CUES = {"compatible with", "consistent with"}
UNCERTAIN_OVERRIDES_NEGATION = {
    "cannot exclude", "can not exclude", "cannot rule out", "can not rule out", "cannot be excluded",
    "can not be excluded", "not excluded", "is not excluded", "cannot be ruled out", "not ruled out",
    "is not ruled out", "not entirely excluded",
}

# Additions to NegEx's en_clinical termset for radiology wording.
EXTRA_PRECEDING_NEGATIONS = [
    "no evidence for", "no radiographic evidence of", "no findings of", "no typical findings of",
    "no signs", "without evidence of", "resolution of", "resolved", "interval resolution of",
    "no longer", "no longer seen", "negative for", "clear of", "free of", "removal of", "no new",
    "no visible", "no definite", "no discrete", "clear airspace", "clear of airspace", "no large", "no significant", "no focal", "no acute",
    "not seen", "none",
]
EXTRA_FOLLOWING_NEGATIONS = [
    "has resolved", "have resolved", "resolved", "has cleared", "have cleared", "is no longer seen",
    "are no longer seen", "no longer visible", "is not seen", "are not seen", "not identified",
    "is not identified", "are not identified", "is absent", "are absent", "not present", "removed",
    "has been removed", "not well seen", "is not well seen", "not well-seen", "is not well-seen",
    "are not well seen", "not visualized", "is not visualized", "are not visualized", "not definitely seen",
    "no longer seen", "are smaller and not definitely seen", "not evident", "is not evident", "not appreciated",
    "is not appreciated", "not demonstrated", "appear within limits of normal", "appears within limits of normal",
    "appear within normal limits", "are within normal limits", "is not demonstrated", "not as well demonstrated",
    "not as well seen", "has cleared", "have been removed", "is not identified on today's study",
]
EXTRA_PSEUDO_NEGATIONS = [
    "no change", "no significant change", "no interval change", "not changed", "unchanged",
    "no increase", "no decrease", "not significantly changed", "without change", "without interval change",
    "not only",
]
EXTRA_TERMINATIONS = [";", "but", "there is", "there are", "there has been", "otherwise", "with", "and there"]


def ruler_patterns() -> list[dict]:
    """EntityRuler phrase patterns (`label`, `pattern`, `id` = canonical name), longest phrases first."""
    groups = (
        (FINDING, FINDINGS), (DISEASE, DISEASES), (ANATOMY, ANATOMY_TERMS), (DEVICE, DEVICES),
        (SYMPTOM, SYMPTOMS), (MEDICATION, MEDICATIONS),
    )
    patterns = []
    for label, table in groups:
        for canonical, phrases in table.items():
            for phrase in phrases:
                patterns.append({"label": label, "pattern": phrase, "id": canonical})
    patterns.sort(key=lambda p: -len(p["pattern"]))
    return patterns


# Extra names for canonical findings that are not phrases of the lexicon (label-set spellings, abbreviations).
EXTRA_SYNONYMS: dict[str, str] = {
    "lung lesion": "lung_lesion", "lung opacity": "lung_opacity", "pleural thickening": "pleural_thickening",
    "enlarged cardiomediastinum": "enlarged_cardiomediastinum", "airspace opacity": "consolidation",
    "cardiac enlargement": "cardiomegaly", "enlarged heart": "cardiomegaly", "large heart": "cardiomegaly",
    "pulmonary edema": "edema", "oedema": "edema", "pulmonary oedema": "edema", "ptx": "pneumothorax",
    "pleural effusion": "effusion", "infiltrates": "infiltration", "emphysema/copd": "emphysema",
    "fibrosis/ild": "fibrosis", "pulmonary fibrosis": "fibrosis", "hiatal hernia": "hernia",
    "rib fracture": "fracture", "pulmonary nodule": "nodule", "lung mass": "mass",
    "no finding": "no_finding", "no findings": "no_finding", "normal": "no_finding",
}

# Built once: lower-case phrase → canonical name, over findings, diseases and the label sets.
_CANONICAL_INDEX: dict[str, str] = {}
for _table in (FINDINGS, DISEASES):
    for _canonical, _phrases in _table.items():
        _CANONICAL_INDEX.setdefault(_canonical.replace("_", " "), _canonical)
        for _phrase in _phrases:
            _CANONICAL_INDEX.setdefault(_phrase, _canonical)
for _label in XRV_LABELS:
    _CANONICAL_INDEX[_label.lower().replace("_", " ")] = _label.lower().replace(" ", "_")
_CANONICAL_INDEX.update(EXTRA_SYNONYMS)


def canonical_finding(name: str) -> str:
    """Canonical finding name for a label or phrase, as used by the classifier, fusion and verification.

    Case, underscores and surrounding spaces are ignored. Known synonyms map to the product label set
    ("pleural effusion" → "effusion", "enlarged heart" → "cardiomegaly", "airspace disease" →
    "consolidation", "Lung Opacity" → "lung_opacity", "Pleural_Thickening" → "pleural_thickening").
    Unknown names come back normalised (lower case, spaces as underscores) so that two spellings of the
    same unknown label still compare equal.

    Args:
        name: a label or phrase.

    Returns:
        The canonical name.

    Raises:
        TypeError: when `name` is not a string.
    """
    if not isinstance(name, str):
        raise TypeError(f"finding name must be a string, got {type(name).__name__}")
    key = re.sub(r"[\s_]+", " ", name.strip().lower())
    if key in _CANONICAL_INDEX:
        return _CANONICAL_INDEX[key]
    if key.endswith("s") and key[:-1] in _CANONICAL_INDEX:  # plural label spellings ("nodules")
        return _CANONICAL_INDEX[key[:-1]]
    return key.replace(" ", "_")


# Findings that count as the same observation when image and text are compared (fusion): a text that
# says "pneumonia" agrees with an image classifier's "consolidation".
RELATED_FINDINGS: dict[str, tuple[str, ...]] = {
    "consolidation": ("pneumonia", "infiltration", "lung_opacity"),
    "pneumonia": ("consolidation", "infiltration", "lung_opacity"),
    "infiltration": ("consolidation", "pneumonia", "lung_opacity"),
    "lung_opacity": ("consolidation", "pneumonia", "infiltration", "atelectasis", "edema", "nodule", "mass"),
    "nodule": ("mass", "lung_lesion"),
    "mass": ("nodule", "lung_lesion", "lung_cancer"),
    "lung_lesion": ("nodule", "mass"),
    "cardiomegaly": ("enlarged_cardiomediastinum",),
    "enlarged_cardiomediastinum": ("cardiomegaly",),
    "emphysema": ("copd", "hyperinflation"),
    "fibrosis": ("scarring",),
    "edema": (),
    "effusion": (),
    "pneumothorax": (),
}


def related_findings(name: str) -> tuple[str, ...]:
    """Canonical names treated as the same observation as `name` (itself first)."""
    canonical = canonical_finding(name)
    return (canonical,) + RELATED_FINDINGS.get(canonical, ())
