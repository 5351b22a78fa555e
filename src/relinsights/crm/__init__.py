"""Dataverse: the thin Web API client, the CRM mirror and the KPI write-back."""
