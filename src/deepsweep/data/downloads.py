"""Raw data sets fetched from where their publishers put them: checksummed, placed atomically, mirrorable.

Each data option with raw files has an entry in ``CATALOG``: the files its source reads, their sha256 and
size, and the canonical URL of each (the ones torchvision, torch-geometric, the UCI repository and the UCR
archive use). ``ensure`` makes ``data.root`` hold every file with the right bytes:

* a file already there is checked (size, then sha256) and kept; one that differs stops with both checksums
  named, since its bytes are not the data set the results claim;
* a missing file is downloaded into a temporary file beside its final place, hashed while it streams, and
  renamed into place only when size and sha256 match: an interrupted or corrupt download leaves nothing.

``$DEEPSWEEP_DATA_MIRROR`` points every download at another source laid out like ``data/``
(``<mirror>/mnist/raw/train-images-idx3-ubyte.gz``): an ``http(s)://`` or ``file://`` URL, or a local folder.
The mirror changes where bytes come from, never which bytes: the checksums are the same.

Why not the libraries' own downloaders: torchvision is not a dependency, torch-geometric's ``download_url``
checks no checksum, and neither has one mirror setting for every data set.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from deepsweep.errors import DataFileError, DownloadError

MIRROR_ENV = "DEEPSWEEP_DATA_MIRROR"
TIMEOUT_S = 60
CHUNK = 1 << 20


@dataclass(frozen=True)
class RawFile:
    name: str  # path below the data set's root folder (data.root)
    sha256: str
    size: int
    url: str  # canonical source: the file itself, or a zip archive that holds it as ``member``
    member: str | None = None


@dataclass(frozen=True)
class RawDataset:
    folder: str  # data.root's place in data/, and the files' place below a mirror's base
    files: tuple[RawFile, ...]


def _idx(base: str, sums: dict[str, tuple[str, int]]) -> tuple[RawFile, ...]:
    return tuple(RawFile(name, sha, size, base + name) for name, (sha, size) in sums.items())


PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data/"  # torch_geometric.datasets.Planetoid.url
UCI_SMS_SPAM = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
UCR_ECG200 = "https://www.timeseriesclassification.com/aeon-toolkit/ECG200.zip"


def _planetoid(folder: str, parts: dict[str, tuple[str, int]]) -> RawDataset:
    """A Planetoid set's eight "ind" files under root/<folder>/raw, where torch-geometric's loader reads them."""
    prefix = folder.lower()
    return RawDataset("planetoid", tuple(
        RawFile(f"{folder}/raw/ind.{prefix}.{part}", sha, size, f"{PLANETOID_URL}ind.{prefix}.{part}")
        for part, (sha, size) in parts.items()))


CATALOG: dict[str, RawDataset] = {
    # torchvision.datasets.MNIST.mirrors[0]; http://yann.lecun.com/exdb/mnist/ serves the same bytes.
    "mnist": RawDataset("mnist/raw", _idx("https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
        "train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
        "t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
        "t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
    })),
    # torchvision.datasets.FashionMNIST.mirrors[0]
    "fashion_mnist": RawDataset("fashion_mnist/raw", _idx("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
        "train-labels-idx1-ubyte.gz": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
        "t10k-images-idx3-ubyte.gz": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
        "t10k-labels-idx1-ubyte.gz": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
    })),
    # Planetoid (Yang et al. 2016) as torch-geometric downloads it; root/<Set>/raw is what PyG reads. The sha256
    # of the files at kimiyoung/planetoid af6abf4, the repository of those URLs (Cora's are byte-identical to
    # the offline mirror's). Its ind.pubmed.allx blob is missing from every snapshot this project could reach:
    # its sha256 and size are the git-lfs pointer's of D61-IA/FisherGCN 140cb29, a copy whose 23 other
    # Planetoid files (Cora, CiteSeer and PubMed's) hash exactly as kimiyoung's.
    "cora": _planetoid("Cora", {
        "x": ("23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab", 22119),
        "tx": ("b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a", 148025),
        "allx": ("9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543", 257305),
        "y": ("94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1", 4054),
        "ty": ("41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad", 28135),
        "ally": ("2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71", 47959),
        "graph": ("58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d", 59847),
        "test.index": ("297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875", 5000),
    }),
    "citeseer": _planetoid("CiteSeer", {
        "x": ("d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6", 31087),
        "tx": ("539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21", 260321),
        "allx": ("2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668", 595021),
        "y": ("8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924", 3014),
        "ty": ("55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce", 24135),
        "ally": ("f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95", 55623),
        "graph": ("d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7", 61987),
        "test.index": ("2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4", 5000),
    }),
    "pubmed": _planetoid("PubMed", {
        "x": ("fbe9cb5c47200d1b7769a26e579be3b7130b556831f9d850e77c4c74f2599b33", 23172),
        "tx": ("4eb5f5d0f30f26497eb0ac6ac9719d09c67e284f1ed0385c93f3ef27a671da3d", 405505),
        "allx": ("508e538e2abdccdd54c4d3e9f49d638b4af7107d85845f66ddea5a5152658b7e", 7578385),
        "y": ("e6c807633307a07ed659249006536a147c7999c797f11a2560752990181b41b3", 854),
        "ty": ("ee2e0d4819d9fbcc403689c3bf2e49face401b605932f093bc58ab6461130fdd", 12135),
        "ally": ("0c37bbe3b5014ec365e9d393cf4791925e5ed94fb194305d74f064a8d7b50f0e", 224739),
        "graph": ("5b89f0036ca22909471f1e6558eb42fa06e0c730a577bde5b058b40638f81dc9", 471808),
        "test.index": ("b101d421688bbaecbd82e8a18f1e282378d6830f3a37666f28ebc47f844341b5", 6000),
    }),
    # UCI Machine Learning Repository, data set 228: a zip holding the collection and a readme.
    "sms_spam": RawDataset("sms_spam/raw", (
        RawFile("SMSSpamCollection", "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d", 477907,
                UCI_SMS_SPAM, member="SMSSpamCollection"),
    )),
    # UCR archive, as timeseriesclassification.com distributes it (one zip per data set).
    "ecg200": RawDataset("ecg200/raw", tuple(
        RawFile(name, sha, 155300, UCR_ECG200, member=name) for name, sha in {
            "ECG200_TRAIN.txt": "a81521c4fdcded0bbb47334136bc4a6bf7dd8cdf8c8d5877b36d207146f55151",
            "ECG200_TEST.txt": "907c243f6e92234fc3a249448240e95db292835217457a2bc4cbe3d73a02902d",
        }.items())),
}
# Data options that read another option's raw files (the same folder, the same checksums).
CATALOG["mnist_segmentation"] = CATALOG["mnist"]


def catalog_digest(name: str) -> str:
    """What a data set's bytes are, from the catalog alone: ``ensure`` guarantees the files match it."""
    files = CATALOG[name].files
    text = "|".join(f"{f.name}:{f.sha256}" for f in sorted(files, key=lambda f: f.name))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_present(path: Path, raw: RawFile) -> bool:
    """True if ``path`` holds the right bytes, False if it is missing; a wrong file stops the run."""
    if not path.is_file():
        return False
    size = path.stat().st_size
    got = file_sha256(path) if size == raw.size else None
    if got != raw.sha256:
        found = f"sha256 {got}" if got else f"{size} bytes"
        raise DataFileError(f"{path}: {found}, expected sha256 {raw.sha256} ({raw.size} bytes); "
                            f"delete it to download it again")
    return True


def _source(dataset: RawDataset, raw: RawFile, mirror: str | None) -> tuple[str, str | None]:
    """The URL to read, and the zip member to take from it (None: the URL is the file)."""
    if not mirror:
        return raw.url, raw.member
    base = mirror if "://" in mirror else Path(os.path.expanduser(mirror)).resolve().as_uri()
    return f"{base.rstrip('/')}/{urllib.parse.quote(f'{dataset.folder}/{raw.name}')}", None


def _progress(total: int | None, label: str):
    """A progress bar on a terminal; elsewhere nothing (one line is printed when the file is in place)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=False, file=sys.stderr)


def _stream(url: str, target: Path, label: str, destination: Path | None = None) -> None:
    """Copy ``url`` into ``target`` (an open-ready path), with progress; ``destination``: where the file is
    wanted in the end, which a failure names (a user who has the file puts it there)."""
    try:
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)  # noqa: S310 (http, https and file only)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        hint = (f"check ${MIRROR_ENV} ({os.environ[MIRROR_ENV]})" if os.environ.get(MIRROR_ENV) else
                f"set ${MIRROR_ENV} to a mirror or a local copy of the data folder")
        place = f"place the file at {destination}" if destination is not None else "place the file yourself"
        raise DownloadError(f"{url}: cannot download ({reason}); {hint}, or {place}") from None
    with response, open(target, "wb") as out:
        length = response.headers.get("Content-Length")
        bar = _progress(int(length) if length and length.isdigit() else None, label)
        try:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                if bar is not None:
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as exc:  # IncompleteRead is an HTTPException
            raise DownloadError(f"{url}: download broke off ({type(exc).__name__}: {exc}); run again to retry") from None
        finally:
            if bar is not None:
                bar.close()


def _fetch(dataset: RawDataset, raw: RawFile, path: Path, mirror: str | None) -> None:
    url, member = _source(dataset, raw, mirror)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as scratch:
        fetched = Path(scratch) / "download"
        _stream(url, fetched, raw.name, destination=path)
        if member is not None:
            try:
                with zipfile.ZipFile(fetched) as archive, archive.open(member) as src, \
                        open(Path(scratch) / "member", "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            except (zipfile.BadZipFile, KeyError) as exc:
                raise DownloadError(f"{url}: no {member} in the downloaded archive ({exc})") from None
            fetched = Path(scratch) / "member"
        size = fetched.stat().st_size
        got = file_sha256(fetched)
        if (got, size) != (raw.sha256, raw.size):
            raise DownloadError(f"{path}: downloaded from {url} with sha256 {got} ({size} bytes), expected "
                                f"{raw.sha256} ({raw.size} bytes); nothing was kept")
        fetched.chmod(0o644)
        os.replace(fetched, path)
    print(f"deepsweep: fetched {path} ({size:,} bytes, sha256 ok) from {url}", file=sys.stderr)


def ensure(name: str, root: str | os.PathLike, mirror: str | None = None) -> list[Path]:
    """Every raw file of data set ``name`` in ``root``, verified; missing ones are downloaded first.

    ``mirror`` defaults to ``$DEEPSWEEP_DATA_MIRROR``."""
    dataset = CATALOG[name]
    mirror = os.environ.get(MIRROR_ENV) if mirror is None else mirror
    root = Path(root)
    placed = []
    for raw in dataset.files:
        path = root / raw.name
        if not _check_present(path, raw):
            _fetch(dataset, raw, path, mirror)
        placed.append(path)
    return placed


def ensure_for(data_cfg) -> list[Path]:
    """The raw files of the configured data option (``data.name`` in the catalog, read from ``data.root``);
    none for bundled data sets (digits, KarateClub) or one the catalog does not know."""
    from deepsweep import paths

    name, root = data_cfg.get("name"), data_cfg.get("root")
    if name not in CATALOG or not root:
        return []
    return ensure(name, paths.resolve(root))
