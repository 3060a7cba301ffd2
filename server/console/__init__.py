"""The supervision console: web pages for supervisors (住建, 人社) and operators, served on the
admin listener under /console/ (issue 16)."""
