"""The notice every user-facing output carries (DESIGN: research use only)."""

RESEARCH_NOTICE = "Research use only, not for clinical diagnosis."
