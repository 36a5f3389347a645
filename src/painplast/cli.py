"""The ``painplast`` command line.

Subcommands: ``simulate``, ``run`` (BIDS-Apps style), ``predict``, ``report``, ``demo``. Every
error the user can cause is one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path

import click

from . import __version__, plasticity
from .config import Config
from .errors import InputError, NotAvailableError, PainplastError


def _modules(text: str | None) -> tuple[str, ...]:
    known = plasticity.names()
    if not text:
        return known
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in names if m not in known]
    if bad:
        raise InputError(f"unknown module(s) {', '.join(bad)} in --modules",
                         fix=f"use a comma-separated subset of {','.join(known)}")
    return names


def _setup_logging(out_dir: Path | None, verbose: bool) -> None:
    handlers: list[logging.Handler] = []
    if out_dir is not None:
        logs = out_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(logs / f"painplast-{time.strftime('%Y%m%d-%H%M%S')}.log")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(fh)
    sh = logging.StreamHandler(sys.stderr)
    sh.setLevel(logging.INFO if verbose else logging.WARNING)
    sh.setFormatter(logging.Formatter("painplast: %(levelname)s: %(message)s"))
    handlers.append(sh)
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="painplast")
def cli() -> None:
    """painplast: pain-induced neuroplasticity in MRI, per participant and as biomarkers."""


@cli.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--participants", "n_participants", type=int, default=40, show_default=True, help="Number of participants.")
@click.option("--sites", "n_sites", type=int, default=2, show_default=True, help="Number of sites (scanners).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same bytes).")
@click.option("--resolution", type=int, default=4, show_default=True, help="Voxel size in mm (2-6).")
@click.option("--effect-scale", type=float, default=1.0, show_default=True, help="Multiply every planted effect.")
@click.option("--null", is_flag=True, help="Plant no group, clinical or responder effect.")
@click.option("--site-confound", type=float, default=0.0, show_default=True, help="0 = patients balanced across sites; 1 = confounded.")
@click.option("--design", type=click.Choice(["cross-sectional", "longitudinal"]), default="cross-sectional", show_default=True,
              help="longitudinal: ses-baseline and ses-followup; chronic patients treated in between, a subacute arm, controls.")
@click.option("--sessions", "n_sessions", type=int, default=1, show_default=True,
              help="Sessions per participant (ses-1, ses-2, ...: repeated measurements with test-retest noise).")
@click.option("--runs", "n_runs", type=int, default=1, show_default=True, help="Runs of every task per session (run-1, run-2, ...).")
@click.option("--tasks", default=None, help="Comma-separated tasks to write (default: pain,somatotopy,modulation,rest).")
@click.option("--n-jobs", type=int, default=2, show_default=True, help="Participants simulated in parallel.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def simulate(out_dir, n_participants, n_sites, seed, resolution, effect_scale, null, site_confound,
             design, n_sessions, n_runs, tasks, n_jobs, quiet):
    """Write a synthetic BIDS cohort with planted, recorded effects to OUT_DIR."""
    from .simulate import TASKS, SimulationParameters, simulate as _simulate
    chosen = tuple(t.strip() for t in tasks.split(",") if t.strip()) if tasks else TASKS
    params = SimulationParameters(n_participants=n_participants, n_sites=n_sites, seed=seed,
                                  resolution=resolution, effect_scale=effect_scale, null=null,
                                  site_confound=site_confound, design=design, n_sessions=n_sessions,
                                  n_runs=n_runs, tasks=chosen)
    _simulate(out_dir, params, n_jobs=n_jobs, progress=not quiet)
    click.echo(str(out_dir))


def _pairs(values, flag: str, example: str) -> dict[str, str]:
    """``A=B`` pairs of a repeatable or comma-separated option (``--task-map rest=restingstate``)."""
    out = {}
    for value in values or ():
        for item in str(value).split(","):
            if not item.strip():
                continue
            key, sep, target = item.partition("=")
            if not (sep and key.strip() and target.strip()):
                raise InputError(f"{flag} {item!r} is not of the form A=B", fix=f"write e.g. {flag} {example}")
            out[key.strip()] = target.strip()
    return out


def _config(config_file, modules, n_permutations, signatures, seed, space=None, task_map=None,
            repetition_time=None) -> Config:
    overrides = {}
    if modules is not None:
        overrides["modules"] = _modules(modules)
    if n_permutations is not None:
        overrides["n_permutations"] = n_permutations
    if signatures:
        overrides["signatures"] = tuple(str(s) for s in signatures)
    if seed is not None:
        overrides["random_state"] = seed
    if space is not None:
        from .cohort import Space
        overrides["space"] = Space.parse(space).label
    if task_map:
        overrides["task_map"] = task_map
    if repetition_time is not None:
        overrides["repetition_time"] = repetition_time
    if config_file is not None:
        return Config.from_file(config_file, **overrides)
    return Config(**overrides)


def _data_options(command):
    """The options that say how to read a dataset: shared by ``run`` and ``predict``."""
    options = [
        click.option("--participant-label", multiple=True, help="Participants to process (with or without 'sub-'); repeatable."),
        click.option("--session-label", multiple=True, help="Sessions to process (with or without 'ses-'); repeatable. At group level: the session of the cross-sectional statistics."),
        click.option("--space", default=None, help="Template space of the preprocessed images, in fMRIPrep's --output-spaces syntax (default MNI152NLin2009cAsym; e.g. MNI152NLin6Asym:res-2)."),
        click.option("--task-map", multiple=True, help="painplast task = the dataset's task label, e.g. rest=restingstate; repeatable."),
        click.option("--confounds-strategy", default=None, help="Confound regressors of every BOLD module, '+'-joined: motion6|motion24, wm_csf, acompcor, global, spikes."),
        click.option("--repetition-time", type=float, default=None, help="Repetition time (s) for runs whose files carry none."),
        click.option("--derivatives", "derivatives", multiple=True, type=click.Path(path_type=Path), help="Derivatives folders to read, anywhere on disk (default: all under BIDS_DIR/derivatives); repeatable, e.g. fMRIPrep and CAT12."),
        click.option("--group-map", multiple=True, help="Codes of participants.tsv's group column, e.g. CLBP=patient,HC=control."),
        click.option("--sex-map", multiple=True, help="Codes of participants.tsv's sex column, e.g. 1=M,2=F."),
        click.option("--strict", is_flag=True, help="A participant listed without any file is an error (default: left out with a warning)."),
        click.option("--config", "config_file", type=click.Path(path_type=Path), default=None, help="JSON file of Config fields."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _load_cohort(bids_dir, config: Config, data: dict, needs=None, lenient_codes: bool = False):
    """The Cohort of BIDS_DIR read with the data options."""
    from .cohort import Cohort
    return Cohort.from_bids(bids_dir, derivatives=list(data["derivatives"]) or None,
                            participant_label=list(data["participant_label"]) or None, space=config.space,
                            session_label=list(data["session_label"]) or None, task_map=config.task_map,
                            repetition_time=config.repetition_time or (config.options.get("connectivity") or {})
                            .get("repetition_time"),
                            group_map=_pairs(data["group_map"], "--group-map", "CLBP=patient,HC=control"),
                            sex_map=_pairs(data["sex_map"], "--sex-map", "1=M,2=F"), strict=data["strict"],
                            needs=needs, lenient_codes=lenient_codes)


def _needs(modules):
    """What each module reads (its declaration), for validation and for stopping before work."""
    from .cohort import Needs
    out = []
    for name in modules:
        declaration = plasticity.get(name)
        task = declaration.defaults.get("task", declaration.task)
        if task is None:
            out.append(Needs(name, anat=True))
        else:
            rest = str(task).lower().startswith("rest")
            out.append(Needs(name, task=task, events=not rest, timeseries=rest))
    return out


def _with_confounds(config: Config, strategy: str | None) -> Config:
    """``--confounds-strategy`` for every module that has a confounds strategy."""
    if not strategy:
        return config
    opts = {k: dict(v) for k, v in config.options.items()}
    for name in config.modules:
        if "confounds_strategy" in plasticity.get(name).defaults:
            opts.setdefault(name, {})["confounds_strategy"] = strategy
    return config.replace(options=opts)


@cli.command()
@click.argument("bids_dir", type=click.Path(path_type=Path))
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.argument("analysis_level", type=click.Choice(["participant", "group"]))
@_data_options
@click.option("--modules", default=None, help=f"Comma-separated subset of {','.join(plasticity.names())} (default: all).")
@click.option("--atlas", default=None, help="Connectivity atlas: pain, power, dosenbach, seitzman, or a label image.")
@click.option("--signature", "signatures", multiple=True, type=click.Path(path_type=Path), help="Pattern weight map (NIfTI) for signature responses; repeatable.")
@click.option("--n-jobs", type=int, default=1, show_default=True, help="Workers: joblib processes for several participants; threads for the runs of a single participant-session.")
@click.option("--scheduler", default=None, help="dask.distributed scheduler address (tcp://HOST:PORT): participant stages, or the group level's permutations, run on its workers.")
@click.option("--dask-workers", type=int, default=None, help="Start a local dask cluster with N workers (participant stages or group permutations).")
@click.option("--biomarker", "biomarkers", multiple=True, help="Build a biomarker for diagnosis, treatment or a participants column (group level); repeatable.")
@click.option("--biomarker-features", type=click.Choice(["a-priori", "all", "connectome"]), default=None,
              help="Biomarker features: the modules' a-priori features (their findings rows; default), all subject features, "
                   "or every edge of the participants' connectomes (continuous targets).")
@click.option("--connectome-kind", type=click.Choice(["partial", "correlation", "tangent"]), default=None,
              help="Edges of --biomarker-features connectome: Ledoit-Wolf partial correlation (default), correlation or tangent.")
@click.option("--connectome-model", type=click.Choice(["ridge", "elastic_net", "cpm"]), default=None,
              help="Model of --biomarker-features connectome: ridge on the top-k edges (default), elastic net, or CPM (Shen et al. 2017).")
@click.option("--connectome-folds", default=None,
              help="Outer folds of --biomarker-features connectome: an integer (default 10, repeated) or loo "
                   "(nested leave-one-out, as published connectome predictions report).")
@click.option("--exclude-column", default=None,
              help="participants.tsv column: participants with 1/true/yes there are left out of the biomarker (e.g. excluded_by_authors).")
@click.option("--n-permutations", type=int, default=None, help="Permutations for voxel-wise and network inference and for the biomarkers' permutation tests (group level).")
@click.option("--longitudinal", default="auto", show_default=True,
              help="Group level: BASELINE,FOLLOWUP sessions of the longitudinal contrasts (time, group:time, "
                   "change~pain_relief, persisting-recovering); auto: when participants have exactly two sessions; none: off.")
@click.option("--seed", type=int, default=None, help="Random seed of the run.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
def run(bids_dir, output_dir, analysis_level, participant_label, session_label, space, task_map,
        confounds_strategy, repetition_time, derivatives, group_map, sex_map, strict, config_file, modules,
        atlas, signatures, n_jobs, scheduler, dask_workers, biomarkers, biomarker_features, connectome_kind,
        connectome_model, connectome_folds, exclude_column, n_permutations, longitudinal, seed, quiet, verbose):
    """Run painplast on BIDS_DIR, writing derivatives to OUTPUT_DIR (BIDS-Apps convention)."""
    from . import engine
    data = dict(participant_label=participant_label, session_label=session_label, derivatives=derivatives,
                group_map=group_map, sex_map=sex_map, strict=strict)
    config = _config(config_file, modules, n_permutations, signatures, seed, space,
                     _pairs(task_map, "--task-map", "rest=restingstate"), repetition_time)
    config = _with_confounds(config, confounds_strategy)
    biomarker_options = {k: v for k, v in (("features", biomarker_features), ("connectome_kind", connectome_kind),
                                           ("connectome_model", connectome_model),
                                           ("connectome_folds", connectome_folds),
                                           ("n_permutations", n_permutations),
                                           ("exclude_column", exclude_column)) if v}
    if atlas or biomarker_options:
        opts = {k: dict(v) for k, v in config.options.items()}
        if atlas:
            opts.setdefault("connectivity", {})["atlas"] = atlas
        if biomarker_options:
            opts.setdefault("biomarker", {}).update(biomarker_options)
        config = config.replace(options=opts)
    needs = _needs(config.modules)
    participant = analysis_level == "participant"
    with warnings.catch_warnings(record=True) as caught:   # said after the checks: a stop is one line
        warnings.simplefilter("always")
        cohort = _load_cohort(bids_dir, config, data, needs, lenient_codes=participant)
    if participant:
        cohort.check_inputs(needs, required=config.modules if modules else ())
    _check_output_dir(bids_dir, output_dir)
    if not participant:   # what the group level needs, checked before anything is written
        pair = engine.longitudinal_sessions(cohort, longitudinal)
        engine.check_group_inputs(cohort, config, output_dir,
                                  engine.group_sessions(cohort, session_label or None, pair))
        if biomarkers:
            from .biomarker import Settings, exclude
            from .biomarker.model import resolve_target
            settings = Settings.from_config(config)
            kept, _ = exclude(cohort.participants.reset_index(), settings.exclude_column)
            for target in biomarkers:
                spec = resolve_target(kept, target)
                if settings.features == "connectome" and spec.kind != "continuous":
                    raise InputError(f"target {target!r} is {spec.kind}; connectome features model a continuous target",
                                     fix="use --biomarker-features all (or a-priori) for a class target")
    _setup_logging(output_dir, verbose)
    log = logging.getLogger("painplast")
    for note in dict.fromkeys([str(w.message) for w in caught] + list(cohort.notes)):
        log.warning("%s", note)
    if analysis_level == "participant":
        summary = engine.run_participant_level(cohort, config, output_dir, n_jobs=n_jobs,
                                               progress=not quiet, scheduler=scheduler,
                                               dask_workers=dask_workers)
        click.echo(f"participant level: {len(summary.done)} done, {len(summary.skipped_existing)} "
                   f"already done, {len(summary.failed)} skipped ({summary.seconds:.1f} s)")
    else:
        engine.run_group_level(cohort, config, output_dir, progress=not quiet, scheduler=scheduler,
                               dask_workers=dask_workers, longitudinal=longitudinal)
        for target in biomarkers:
            engine.run_biomarker(cohort, config, output_dir, target, runner=_biomarker,
                                 longitudinal=longitudinal)
        _maybe_report(output_dir)
        click.echo(str(output_dir))


def _check_output_dir(bids_dir: Path, output_dir: Path) -> None:
    b, o = Path(bids_dir).resolve(), Path(output_dir).resolve()
    if o == b:
        raise InputError("the output folder is the input dataset", path=output_dir,
                         fix="write derivatives to a new folder, e.g. BIDS_DIR/derivatives/painplast")
    if o.exists() and any(o.iterdir()) and not (o / "dataset_description.json").exists():
        raise InputError("output folder is not empty and is not a painplast derivatives folder",
                         path=output_dir, fix="give a new or empty folder (painplast never overwrites other data)")


def _biomarker(cohort, config, output_dir, target, **overrides):
    """The engine's biomarker runner: :func:`painplast.biomarker.run_from_derivatives`."""
    from .biomarker import run_from_derivatives

    return run_from_derivatives(cohort, config, output_dir, target, **overrides)


def _maybe_report(output_dir) -> Path | None:
    try:
        from .report import write_report
    except ImportError:
        return None
    return write_report(output_dir)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("bids_dir", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@_data_options
@click.option("--n-jobs", type=int, default=1, show_default=True, help="Worker processes (joblib).")
@click.option("--exclude-column", default=None,
              help="participants.tsv column: participants with 1/true/yes there are left out (e.g. excluded_by_authors).")
def predict(model, bids_dir, out, participant_label, session_label, space, task_map, confounds_strategy,
            repetition_time, derivatives, group_map, sex_map, strict, config_file, n_jobs, exclude_column):
    """Apply a saved MODEL to the participants of BIDS_DIR; write OUT/predictions.tsv.

    painplast first computes the features the model needs for those participants (into
    OUT/features, a painplast derivatives folder), then applies the model. The data options are
    those of ``painplast run``. When BIDS_DIR's participants.tsv has the model's target column,
    the agreement (r for a continuous target, AUC for two classes) with its 95% interval is
    printed and written to OUT/validation.json: external validation in one command.
    """
    from . import engine
    from .biomarker.features import from_derivatives
    from .biomarker.model import predict as _predict
    from .biomarker.store import load_model
    from .derivatives import write_tsv
    loaded = load_model(model)
    spec = loaded.metadata.get("biomarker_input") or {}
    needed = sorted({name.split(".", 1)[0] for name in spec.get("features", [])
                     if name.split(".", 1)[0] in plasticity.names()} | ({"connectivity"} if spec.get("connectome") else set()))
    bids_dir, out = Path(bids_dir), Path(out)
    data = dict(participant_label=participant_label, session_label=session_label, derivatives=derivatives,
                group_map=group_map, sex_map=sex_map, strict=strict)
    config = _config(config_file, ",".join(needed) or None, None, (), None, space,
                     _pairs(task_map, "--task-map", "rest=restingstate"), repetition_time)
    config = _with_confounds(config, confounds_strategy)
    trained_with = loaded.metadata.get("connectivity_options") or {}
    if spec.get("connectome") and trained_with and config_file is None:   # the stage the model was trained with
        opts = {k: dict(v) for k, v in config.options.items()}
        opts["connectivity"] = {**trained_with, **opts.get("connectivity", {})}
        config = config.replace(options=opts)
    needs = _needs(config.modules)
    cohort = _load_cohort(bids_dir, config, data, needs)
    cohort.check_inputs(needs, required=config.modules)
    sessions = cohort.cross_sectional_sessions(list(session_label) or None)
    _check_output_dir(bids_dir, out / "features")
    participants = cohort.participants.reset_index()
    features_dir = out / "features"
    engine.run_participant_level(cohort, config, features_dir, progress=False, n_jobs=n_jobs)
    from .biomarker import exclude
    participants, note = exclude(participants, exclude_column)
    if spec.get("connectome"):
        from .biomarker.connectome_run import predict_connectome
        predictions = predict_connectome(loaded, features_dir, sessions)
        predictions = predictions[predictions["participant_id"].isin(participants["participant_id"].astype(str))]
    else:
        table = from_derivatives(features_dir, sessions=sessions)
        predictions = _predict(model, table, participants)
    write_tsv(out / "predictions.tsv", predictions)
    click.echo(str(out / "predictions.tsv"))
    _external_validation(loaded, predictions, participants, out, note)


def _external_validation(loaded, predictions, participants, out: Path, note) -> None:
    """r or AUC of the predictions against the model's target column, if the sample has it."""
    from .biomarker.connectome_run import external_validation
    from .derivatives import write_json
    column = loaded.metadata.get("target_column") or loaded.metadata.get("target")
    kind = loaded.metadata.get("model", {}).get("kind", "regressor")
    found = external_validation(predictions, participants, column, kind) if column else None
    if found is None:
        click.echo(f"no {column} values in this sample: predictions only, no validation")
        return
    from .biomarker.validate import _json_ready
    found = _json_ready({"model": str(loaded.path), "target": loaded.metadata.get("target"), **found,
                         "notes": [note] if note else []})
    write_json(out / "validation.json", found)
    label = "r" if found["metric"] == "r" else "AUC"
    click.echo(f"{label} = {found['estimate']:.3f} [95% CI {found['ci_low']:.3f}, {found['ci_high']:.3f}] "
               f"against {column} (n = {found['n']}); written to {out / 'validation.json'}")


@cli.command()
@click.argument("output_dir", type=click.Path(path_type=Path))
def report(output_dir):
    """Rebuild OUTPUT_DIR/report.html from the results in OUTPUT_DIR."""
    try:
        from .report import write_report
    except ImportError:
        raise NotAvailableError("painplast report is not available yet") from None
    click.echo(str(write_report(output_dir)))


@cli.command()
@click.argument("bids_dir", type=click.Path(path_type=Path))
@click.argument("output_dir", type=click.Path(path_type=Path))
@_data_options
@click.option("--modules", default=None, help="Comma-separated modules (default: all).")
@click.option("--sessions", default=None, help="Sessions compared, comma-separated (default: all of them).")
@click.option("--who", type=click.Choice(["controls", "patients", "all"]), default="controls", show_default=True,
              help="Whose repeated sessions: people who should not change between them.")
def reliability(bids_dir, output_dir, participant_label, session_label, space, task_map, confounds_strategy,
                repetition_time, derivatives, group_map, sex_map, strict, config_file, modules, sessions, who):
    """Test-retest ICC(2,1)/ICC(3,1) of every feature from OUTPUT_DIR's participant results."""
    from .reliability import run_reliability
    data = dict(participant_label=participant_label, session_label=session_label, derivatives=derivatives,
                group_map=group_map, sex_map=sex_map, strict=strict)
    config = _config(config_file, modules, None, (), None, space,
                     _pairs(task_map, "--task-map", "rest=restingstate"), repetition_time)
    config = _with_confounds(config, confounds_strategy)
    cohort = _load_cohort(bids_dir, config, data, _needs(config.modules))
    labels = [s for s in (sessions or "").split(",") if s.strip()] or None
    click.echo(str(run_reliability(cohort, config, output_dir, labels, who)))


@cli.command()
@click.argument("out", type=click.Path(path_type=Path), default=Path("demo_output"))
@click.option("--n-jobs", type=int, default=2, show_default=True)
@click.option("--longitudinal", is_flag=True,
              help="The longitudinal demo: baseline and follow-up sessions, longitudinal findings, "
                   "test-retest reliability of the controls, baseline-only outcome biomarker.")
@click.option("--quiet", is_flag=True)
def demo(out, n_jobs, longitudinal, quiet):
    """Simulate the demo cohort, run every module, the biomarker and the report."""
    from .simulate import SimulationParameters, simulate as _simulate
    from .cohort import Cohort
    from . import engine
    out = Path(out)
    bids = out / "bids"
    results = out / "derivatives"
    # the longitudinal demo leaves out the pain task (sensitization does not reverse) to stay in
    # minutes, and has more subacute patients (16 of 40) so the outcome biomarker has some to learn from
    params = SimulationParameters(design="longitudinal", tasks=("somatotopy", "modulation", "rest"),
                                  chronic_fraction=0.35, subacute_fraction=0.4) \
        if longitudinal else SimulationParameters()
    if not (bids / "participants.tsv").exists():
        _simulate(bids, params, n_jobs=n_jobs, progress=not quiet)
    cohort = Cohort.from_bids(bids)
    signature = bids / "derivatives" / "simulation" / "signature-simpain_weights.nii.gz"
    # the demo keeps validation light so it runs in minutes: fewer repeats and permutations
    config = Config(signatures=(str(signature),) if signature.exists() else (), n_permutations=500,
                    options={"biomarker": {"repeats": 2, "n_permutations": 20, "inner_folds": 3,
                                           "n_bootstrap": 1000, "learning": False}})
    if longitudinal:
        config = config.replace(modules=tuple(m for m in config.modules if m != "sensitization"))
    _setup_logging(results, False)
    engine.run_participant_level(cohort, config, results, n_jobs=n_jobs, progress=not quiet)
    engine.run_group_level(cohort, config, results, progress=not quiet)
    if longitudinal:
        from .reliability import run_reliability
        run_reliability(cohort, config, results)
    for target in (("diagnosis", "outcome") if longitudinal else ("diagnosis", "treatment")):
        try:
            engine.run_biomarker(cohort, config, results, target, runner=_biomarker)
        except InputError as error:  # the report lists the biomarker as not run, with the reason
            logging.getLogger("painplast").warning("biomarker %s not built: %s", target, error)
    path = _maybe_report(results)
    click.echo(str(path if path is not None else results))


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr (Python's default adds the source line)."""
    click.echo(f"painplast: warning: {' '.join(str(message).split())}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into one line and exit status 2."""
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="painplast", standalone_mode=False)
    except click.exceptions.Exit as exit_:
        return exit_.exit_code
    except click.exceptions.Abort:
        click.echo("painplast: aborted", err=True)
        return 130
    except click.ClickException as error:  # usage errors: bad option, missing argument
        click.echo(f"painplast: error: {' '.join(error.format_message().split())}", err=True)
        return 2
    except (InputError, NotAvailableError) as error:
        click.echo(f"painplast: error: {' '.join(str(error).split())}", err=True)
        return 2
    except PainplastError as error:
        click.echo(f"painplast: error: {' '.join(str(error).split())}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("painplast: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def _entry() -> None:  # console-script wrapper
    sys.exit(main())
