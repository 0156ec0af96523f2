"""The instructor's tools: the course, the graded exercises, the class store."""
