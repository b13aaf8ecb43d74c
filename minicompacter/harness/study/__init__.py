"""The study behind RESULTS.md: its runs and verdicts (study.py), its report (report.py), its
figures (plots.py), all three run end to end by results.py."""
