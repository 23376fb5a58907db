"""Model health analysis: which layers to check, probe statistics, dead/constant units, duplicate filters, diffs.

Each module has one job; `vizcore.check` puts them together into a `CheckReport`.
"""
