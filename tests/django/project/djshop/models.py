from django.db import models


class Order(models.Model):
    """A row the tasks and the transaction tests write."""

    note = models.CharField(max_length=100)
