"""Compatibility re-exports: the names that lived here before issue 14 split this module by job.

Each name now lives in a module of its own; import it from there:

* :class:`~recsim_personas.data.table.Table`, :class:`~recsim_personas.data.table.RowProblems`,
  ``ColumnKind``: :mod:`recsim_personas.data.table`;
* :func:`~recsim_personas.data.delimited.read_table`: :mod:`recsim_personas.data.delimited`;
* :func:`~recsim_personas.data.files.read_file_table`: :mod:`recsim_personas.data.files`;
* :func:`~recsim_personas.data.interactions.check_interactions`, ``finish_interactions``:
  :mod:`recsim_personas.data.interactions`;
* :func:`~recsim_personas.data.custom_csv.load_csv`: :mod:`recsim_personas.data.custom_csv`.
"""

from __future__ import annotations

from recsim_personas.data.custom_csv import load_csv
from recsim_personas.data.delimited import read_table
from recsim_personas.data.files import read_file_table
from recsim_personas.data.interactions import check_interactions, finish_interactions
from recsim_personas.data.table import ColumnKind, RowProblems, Table

__all__ = [
    "ColumnKind",
    "RowProblems",
    "Table",
    "check_interactions",
    "finish_interactions",
    "load_csv",
    "read_file_table",
    "read_table",
]
