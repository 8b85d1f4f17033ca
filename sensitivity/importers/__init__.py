"""Importers: SBML models (`sbml.load`) and PEtab problems (`petab.load`)."""
