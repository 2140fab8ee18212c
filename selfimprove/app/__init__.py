"""The in-app side: what a production application imports — `load_policy` (runtime) and `instrument` /
`tag_policy` (instrument). Kept light: it must not pull the pipeline into the app's process."""
