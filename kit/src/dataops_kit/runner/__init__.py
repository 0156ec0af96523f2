"""Run a stage notebook under DVC: papermill, a fast kernel, a notebook filter."""
