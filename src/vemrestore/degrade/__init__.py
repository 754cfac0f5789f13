"""Forward models of the microscope (no torch needed; torch tensors accepted)."""

from vemrestore.degrade._axial import AxialSectioning, SectioningInfo, section_centres, sectioning_matrix

__all__ = ["AxialSectioning", "SectioningInfo", "section_centres", "sectioning_matrix"]
