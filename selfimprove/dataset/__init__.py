"""Building the dataset from pulled telemetry: joining eval verdicts to spans (`join`), choosing and splitting
samples (`select`), checking the policies production ran (`policies`), the dataset table and its readers
(`table`), judge/human agreement (`agreement`) and the human-readable summary (`summary`)."""
