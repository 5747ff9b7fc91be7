"""Network dissection of a generator: match every unit of the chosen layers to the concept it draws."""

from gandissect.dissection.dissector import *  # noqa: F403
