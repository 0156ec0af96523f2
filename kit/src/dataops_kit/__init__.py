"""The workspace's toolkit: the stage runner (``runner``), the machine set-up
(``install``, ``lockcheck``), the instructor's tools (``teach``) and the one
home of DVC and git facts (``facts``). It imports the student's helpers
(``dataops``) for their rules; they never import it."""
