"""Workshop mode: the attendee's own copies of the notebooks in JupyterLab, offline, and the
preparation beforehand (`deploykit workshop`, `deploykit workshop prepare`); several attendees
on one host with JupyterHub (`deploykit workshop hub`)."""

from .hub import Attendee, Hub, start_hub
from .lab import CopyReport, Lab, attendee_copies, start_lab
from .prepare import Checklist, NotebookCheck, prepare_workshop

__all__ = [
    "CopyReport",
    "Lab",
    "attendee_copies",
    "start_lab",
    "Checklist",
    "NotebookCheck",
    "prepare_workshop",
    "Attendee",
    "Hub",
    "start_hub",
]
