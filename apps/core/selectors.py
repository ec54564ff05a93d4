# Reads of job rows are team-scoped in each app (e.g. apps.runs.selectors).
