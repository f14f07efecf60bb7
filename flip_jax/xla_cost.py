"""Model FLOPs of a jitted program from XLA's cost analysis (one place for
the benchmarks and SRP4CTR's FLOPs report)."""
from __future__ import annotations


def cost_flops(lowered, compiled=None) -> float:
  """FLOPs of a program as it states them (NaN when XLA gives none).

  The lowered module's count comes first: the compiled one's is
  backend-specific (on GPU it leaves out the matmuls handed to cuBLAS).
  """
  for obj in (lowered, compiled):
    if obj is None:
      continue
    try:
      cost = obj.cost_analysis()
    except Exception:  # pylint: disable=broad-except
      continue
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    if cost and cost.get("flops"):
      return float(cost["flops"])
  return float("nan")
