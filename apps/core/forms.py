# core has no forms of its own: it provides shared models and the job lifecycle.
