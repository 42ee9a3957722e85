"""Build the embedded dataset `core/data/cifar10_mini.zip` from the CIFAR-10 JPEG zip.

A balanced, reproducible subset: the first N training and M test images of each class in file-name
order, copied byte for byte (no re-encoding). Usage:

    python scripts/build_cifar10_mini.py ../shared/data/cifar10-jpeg.zip --train-per-class 500 --test-per-class 100
"""

from __future__ import annotations

import argparse
import hashlib
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "core" / "data" / "cifar10_mini.zip"


def build(source: Path, out: Path, train_per_class: int, test_per_class: int) -> str:
    """Write the subset zip deterministically (fixed timestamps) and return its sha256."""
    with zipfile.ZipFile(source) as src:
        names = sorted(n for n in src.namelist() if n.endswith(".jpg"))
        picked: list[str] = []
        for split, per_class in (("train", train_per_class), ("test", test_per_class)):
            by_class: dict[str, list[str]] = {}
            for n in names:
                parts = n.split("/")
                if len(parts) == 4 and parts[1] == split:
                    by_class.setdefault(parts[2], []).append(n)
            for cls in sorted(by_class):
                picked.extend(by_class[cls][:per_class])
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
            for n in picked:
                info = zipfile.ZipInfo("cifar10-mini/" + n.split("/", 1)[1], date_time=(2020, 1, 1, 0, 0, 0))
                dst.writestr(info, src.read(n))
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="cifar10-jpeg.zip (cifar10/{train,test}/<class>/<n>.jpg)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args()
    digest = build(args.source, args.out, args.train_per_class, args.test_per_class)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) sha256 {digest}")


if __name__ == "__main__":
    main()
