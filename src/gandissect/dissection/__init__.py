"""Network dissection of a generator: match every unit of the chosen layers to the concept it draws.

`config` (settings), `labels` (labelling rules and cross-fitting), `results` (the `Dissection`, JSON, CSV,
`Dissection.load`), `dissector` (the two passes over the engine's sample pass).
"""

from gandissect.dissection.config import DissectConfig
from gandissect.dissection.dissector import RESULT_FILES, Dissector
from gandissect.dissection.labels import RULES, RuleResult
from gandissect.dissection.results import Dissection, LayerResult, to_csv, to_json, unit_records

__all__ = ["RESULT_FILES", "RULES", "DissectConfig", "Dissection", "Dissector", "LayerResult", "RuleResult", "to_csv",
           "to_json", "unit_records"]
