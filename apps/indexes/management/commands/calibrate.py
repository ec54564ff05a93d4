from apps.core.commands import InputError, JsonCommand
from apps.indexes.models import Deployment
from workers.common.configs.calibration import CalibrationConfig


class Command(JsonCommand):
    help = (
        "Fit a relevance calibration of a deployment on a judged split of its index's version "
        "(a job on the encode queue; --sync runs it here). Prints the threshold, the ECE and "
        "precision/recall on held-out queries against a global raw-score threshold."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="the deployment")
        parser.add_argument("--team", help="the team's slug, when several teams use the name")
        for name, field in CalibrationConfig.model_fields.items():
            flag = f"--{name.replace('_', '-')}"
            if field.annotation is bool:
                parser.add_argument(flag, action="store_true", help=field.description)
            else:
                kind = {int: int, float: float}.get(type(field.default), str)
                parser.add_argument(flag, type=kind, help=field.description)
        parser.add_argument("--sync", action="store_true", help="run the job in this process")
        parser.add_argument("--timeout", type=float, default=3600.0)

    def handle(self, *args, name, team, sync, timeout, **options):
        from apps.indexes.calibrations import CalibrationError, calibration_create
        from workers.tasks.calibration import calibrate

        found = Deployment.objects.filter(name=name).select_related("team", "index")
        if team:
            found = found.filter(team__slug=team)
        found = list(found)
        if not found:
            raise InputError(f"{name}: no such deployment" + (f" in {team}" if team else ""))
        if len(found) > 1:
            teams = ", ".join(sorted(d.team.slug for d in found))
            raise InputError(f"{name}: deployed by several teams ({teams}); pass --team")
        deployment = found[0]
        params = {
            n: options[n]
            for n in CalibrationConfig.model_fields
            if options.get(n) not in (None, False)
        }
        try:
            job = calibration_create(team=deployment.team, deployment=deployment,
                                     params=params, enqueue=not sync)  # fmt: skip
        except CalibrationError as exc:
            lines = [line.partition(": ") for line in str(exc).split("; ")]
            raise InputError(
                *[f"--{field.replace('_', '-')}: {why}" for field, _, why in lines]
            ) from None

        def payload(job):
            held = (job.results or {}).get("held_out") or {}
            return {"calibration": job.pk, "deployment": name, "index": job.index_id,
                    "status": job.status, "method": job.method, "threshold": job.threshold,
                    "ece": (job.results or {}).get("ece"), "held_out": held}  # fmt: skip

        self.run_job(job=job, task=calibrate, sync=sync, timeout=timeout, key="calibration",
                     payload=payload)  # fmt: skip
