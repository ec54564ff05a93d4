# Job rows are shown in the admin of each concrete job model (e.g. runs.Evaluation).
