"""The notice every user-facing output carries (research use only)."""

RESEARCH_NOTICE = "Research use only, not for clinical diagnosis."
