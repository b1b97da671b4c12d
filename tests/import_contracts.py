"""An import-linter contract type the package's layering uses (``[tool.importlinter]`` in pyproject.toml)."""

from __future__ import annotations

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output


class PublicApiContract(Contract):
    """The source package imports no private module (a name starting with ``_``) outside itself.

    import-linter's own wildcards replace whole module names only, so a
    ``forbidden`` contract cannot say "every ``_module``"; this one does, and
    a private module added next month is covered without editing the list.

    Configuration options:
        - source_package: The package held to the public API (e.g. ``patternsearch.cli``).
        - root_package: The package whose private modules it may not import.
    """

    source_package = fields.StringField()
    root_package = fields.StringField()

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:  # noqa: D102
        source, root = str(self.source_package), str(self.root_package)
        importers = {source} | graph.find_descendants(source)
        broken = []
        for importer in sorted(importers):
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                inside_root = imported == root or imported.startswith(f"{root}.")
                private = any(part.startswith("_") and part != "__init__" for part in imported.split(".")[1:])
                if inside_root and private and imported not in importers:
                    broken.append((importer, imported))
        return ContractCheck(kept=not broken, metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:  # noqa: D102
        for importer, imported in check.metadata["broken"]:
            output.print_error(f"{importer} imports the private module {imported}", bold=False)
