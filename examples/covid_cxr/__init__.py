"""The paper's recipe end to end, as a worked example of xraylens.

``python -m examples.covid_cxr all --profile quick`` prepares both public datasets, trains,
evaluates, ensembles, explains, profiles and writes a Markdown report; see ``README.md`` here.
"""
