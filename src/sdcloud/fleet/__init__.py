"""Scale-out: ``sdcloud serve --broker ...`` hands generation jobs to ``sdcloud worker``
processes on other machines over Celery + Redis. Nothing here is imported unless ``--broker``
is given (or a worker runs): the local single-box mode never imports celery or redis."""
