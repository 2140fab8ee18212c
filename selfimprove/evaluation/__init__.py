"""The evaluation engine `update` and `evaluate` share: replaying a policy on samples (`replay`), scoring a
candidate (`scorer`), the sequential replay loop (`loop`), reading its inputs (`inputs`), the design and power of a
comparison (`design`), the parts of the report (`report`) and the HTML report (`page`, `html`)."""
