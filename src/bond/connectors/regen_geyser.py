"""Regenerate the Geyser gRPC stubs: `python -m bond.connectors.regen_geyser`.

Runs grpcio-tools' protoc on geyser.proto into geyser_pb/ and makes the generated
import package-relative, so the stubs work from the installed `bond` package.
"""

import re
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
OUT = HERE / "geyser_pb"


def main() -> int:
  """Generate geyser_pb2.py, geyser_pb2.pyi and geyser_pb2_grpc.py; return protoc's status."""
  OUT.mkdir(exist_ok=True)
  (OUT / "__init__.py").write_text('"""Generated Geyser gRPC stubs (see ../regen_geyser.py)."""\n')
  well_known = str(resources.files("grpc_tools") / "_proto")
  status = protoc.main(
    [
      "grpc_tools.protoc",
      f"-I{HERE}",
      f"-I{well_known}",
      f"--python_out={OUT}",
      f"--pyi_out={OUT}",
      f"--grpc_python_out={OUT}",
      str(HERE / "geyser.proto"),
    ]
  )
  if status != 0:
    return int(status)
  grpc_file = OUT / "geyser_pb2_grpc.py"
  text = grpc_file.read_text()
  text = re.sub(r"^import geyser_pb2 as", "from . import geyser_pb2 as", text, flags=re.M)
  grpc_file.write_text(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
