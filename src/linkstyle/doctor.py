"""Every file a config needs, whether it is there, and where the official one comes from.

Nothing is fetched: this only looks. The workflow runs the same check before its first job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .paths import RunPaths

STYLEGAN_SOURCES = (
    "the paper's StyleGAN-XL ImageNet-256: "
    "https://s3.eu-central-1.amazonaws.com/avg-projects/stylegan_xl/models/imagenet256.pkl; other official "
    "pickles are listed in the README of github.com/autonomousvision/stylegan-xl (StyleGAN-XL) or "
    "github.com/NVlabs/stylegan3 (StyleGAN3, StyleGAN2)"
)


@dataclass(frozen=True)
class Asset:
    what: str
    path: str
    present: bool
    required: bool
    source: str
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.present and not self.problem or not self.required


def _head_problem(path: Path, classes: tuple[int, ...]) -> str:
    """Does the weights file's classification head cover the class set? Read lazily (mmap), not loaded."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, not raised
        return f"cannot be read as a state dict ({type(exc).__name__}: {exc})"
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    heads = [v for v in state.values() if hasattr(v, "dim") and v.dim() == 2] if isinstance(state, dict) else []
    if not heads:
        return "holds no Linear layer weights"
    n_classes = int(heads[-1].shape[0])
    if n_classes <= max(classes):
        return f"its head has {n_classes} classes, which does not cover the class set {list(classes)}"
    return ""


def _stylegan_problem(cfg: Config) -> str:
    """Load the network once (CPU) to check its classes against the config."""
    from .generators.stylegan import load_stylegan

    try:
        gen = load_stylegan(cfg.generator.pickle, cfg.generator.repo)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - reported as the asset's problem
        return f"does not load: {exc}"
    if gen.num_classes != cfg.generator.num_classes:
        return f"the network has {gen.num_classes} classes, generator.num_classes says {cfg.generator.num_classes}"
    if gen.num_classes <= max(cfg.classes):
        return f"the network has {gen.num_classes} classes; the class set {list(cfg.classes)} needs more (is it class-conditional?)"
    return ""


def _digest_problem(path: Path, expected: str | None, key: str) -> str:
    """A pinned digest that the file does not have (io.check_sha256, before anything opens the file)."""
    from .io import UntrustedFile, check_sha256

    if not expected or not path.is_file():
        return ""
    try:
        check_sha256(path, expected, key)
    except UntrustedFile as exc:
        return str(exc)
    return ""


def _pickle_problem(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(2)
    return "" if head[:1] == b"\x80" else "not a Python pickle (it should start with the pickle protocol byte)"


def assets(cfg: Config, deep: bool = False) -> list[Asset]:
    """``deep`` also opens present files to check them against the config (class counts)."""
    out: list[Asset] = []
    gen = cfg.generator
    if gen.is_builtin:
        out.append(Asset("generator: built-in critters world", "(built in)", True, True, "part of linkstyle"))
    elif gen.kind == "stylegan":
        pkl = Path(gen.pickle or "")
        present = pkl.is_file()
        repo = Path(gen.repo or "")
        has_legacy = (repo / "legacy.py").is_file()
        problem = (_digest_problem(pkl, gen.sha256, "generator.sha256") or _pickle_problem(pkl)) if present else ""
        if deep and present and not problem and has_legacy:
            problem = _stylegan_problem(cfg)
        out.append(Asset("generator: StyleGAN network pickle", str(pkl), present, True, STYLEGAN_SOURCES, problem))
        out.append(Asset("generator: checkout of the official StyleGAN repository (its code rebuilds the pickle)",
                         str(repo), repo.is_dir(), True,
                         "git clone https://github.com/autonomousvision/stylegan-xl (or NVlabs/stylegan3)",
                         "" if not repo.is_dir() or has_legacy else "no legacy.py in it: not an official StyleGAN checkout"))
    elif gen.kind == "biggan":
        from .generators.biggan import biggan_asset

        info = biggan_asset(gen.weights_dir)
        out.append(Asset(f"generator: {info['what']}", str(info["path"]), bool(info["present"]), True, str(info["source"])))
    paths = RunPaths(cfg.run_dir)
    for clf in cfg.classifiers:
        if clf.kind == "demo":
            path = paths.classifier_weights(clf.name)
            out.append(Asset(f"classifier {clf.name}: demo {clf.arch} weights", str(path), path.exists(), False,
                             "trained by the workflow (rule train_classifier)"))
        elif clf.kind == "torchvision":
            from .classifiers.torchvision_kind import weights_asset

            info = weights_asset(clf.arch, clf.weights)
            problem = _digest_problem(Path(str(info["path"])), clf.sha256, f"classifiers[{clf.name}].sha256")
            if deep and info["present"] and not problem:
                problem = _head_problem(Path(info["path"]), cfg.classes)
            out.append(Asset(f"classifier {clf.name}: {info['what']}", str(info["path"]), bool(info["present"]),
                             not clf.allow_download, str(info["source"]), problem))
        elif clf.kind == "timm":
            from .classifiers.timm_kind import timm_weights_asset

            info = timm_weights_asset(clf.arch, clf.weights)
            problem = _digest_problem(Path(str(info["path"])), clf.sha256, f"classifiers[{clf.name}].sha256")
            if deep and info["present"] and not problem and not str(info["path"]).endswith(".safetensors"):
                problem = _head_problem(Path(info["path"]), cfg.classes)
            out.append(Asset(f"classifier {clf.name}: {info['what']}", str(info["path"]), bool(info["present"]),
                             not clf.allow_download, str(info["source"]), problem))
        elif clf.kind == "torchscript":
            path = Path(clf.path or "")
            out.append(Asset(f"classifier {clf.name}: TorchScript module with features(x) and head(r)", str(path),
                             path.is_file(), True, "your own torch.jit.script(...).save(path) (see docs)",
                             _digest_problem(path, clf.sha256, f"classifiers[{clf.name}].sha256")))
    if cfg.measure.segmenter == "learned" and (cfg.segmentation.labels or not gen.has_ground_truth):
        # Not required before the run: the run itself exports the images to label, and stops at
        # label_import until the maps are there.
        folder = Path(cfg.segmentation.labels) if cfg.segmentation.labels else None
        count = len(list(folder.glob("*.png"))) if folder is not None and folder.is_dir() else 0
        problem = "" if folder is None or count >= cfg.segmentation.min_labelled or not folder.is_dir() else (
            f"{count} PNG label maps, fewer than segmentation.min_labelled={cfg.segmentation.min_labelled}")
        shown = str(folder) if folder is not None else "segmentation.labels: not set yet"
        out.append(Asset("part segmenter: your label maps (PNG index images)", shown,
                         folder is not None and folder.is_dir(), False,
                         f"label the images that `linkstyle label_export` writes to {paths.labels_dir / 'images'} "
                         "and set segmentation.labels (docs/segmentation.md)", problem))
    return out


def report(items: list[Asset]) -> str:
    lines = []
    for a in items:
        mark = "ok     " if a.present and not a.problem else ("MISSING" if a.required and not a.present else
                                                             "INVALID" if a.problem else "later  ")
        lines.append(f"[{mark}] {a.what}\n          {a.path}")
        if a.present and Path(a.path).is_file() and a.what.split(":")[0] != "part segmenter":
            from .io import file_sha256

            lines.append(f"          sha256: {file_sha256(a.path)}")  # to pin it: generator.sha256 / classifiers[].sha256
        if a.problem:
            lines.append(f"          problem: {a.problem}")
        if not a.present or a.problem:
            lines.append(f"          from: {a.source}")
    return "\n".join(lines)


def missing(items: list[Asset]) -> list[Asset]:
    return [a for a in items if not a.ok]
