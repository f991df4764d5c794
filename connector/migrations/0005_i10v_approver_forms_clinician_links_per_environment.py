"""Approvers match by EHR username, fhirUser or Practitioner identifier (and say which); clinician
links are keyed to organization + EHR environment + absolute fhirUser URL.

Links made before this migration recorded neither the environment nor (for EHRs that send a
relative fhirUser) the server: they cannot be told test from production, so they are dropped.
Each clinician links again once, with one Microsoft sign-in, at their next launch.
"""

from django.conf import settings
from django.db import migrations, models


def drop_links_without_an_environment(apps, schema_editor):
    apps.get_model("connector", "ClinicianLink").objects.filter(environment="").delete()


class Migration(migrations.Migration):

    dependencies = [
        ('connector', '0004_visit_schedule_and_appointment_keys'),
        ('tenants', '0002_tenant_guest_limit_and_meeting_backend'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='clinicianlink',
            name='one_link_per_ehr_user',
        ),
        migrations.AddField(
            model_name='clinicianlink',
            name='environment',
            field=models.CharField(choices=[('test', 'Test'), ('production', 'Production')], default='', max_length=12),
            preserve_default=False,
        ),
        migrations.RunPython(drop_links_without_an_environment, migrations.RunPython.noop),
        migrations.AddField(
            model_name='ehrapprover',
            name='last_matched_as',
            field=models.CharField(blank=True, choices=[('username', 'EHR username (preferred_username)'), ('fhir_user', 'fhirUser reference'), ('identifier', 'Practitioner identifier')], help_text='How the last EHR sign-in matched.', max_length=12),
        ),
        migrations.AddField(
            model_name='ehrapprover',
            name='last_matched_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='endpointapproval',
            name='matched_as',
            field=models.CharField(blank=True, choices=[('username', 'EHR username (preferred_username)'), ('fhir_user', 'fhirUser reference'), ('identifier', 'Practitioner identifier')], max_length=12, verbose_name='approver matched by'),
        ),
        migrations.AddField(
            model_name='historicalclinicianlink',
            name='environment',
            field=models.CharField(choices=[('test', 'Test'), ('production', 'Production')], default='', max_length=12),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name='historicalehrapprover',
            name='last_matched_as',
            field=models.CharField(blank=True, choices=[('username', 'EHR username (preferred_username)'), ('fhir_user', 'fhirUser reference'), ('identifier', 'Practitioner identifier')], help_text='How the last EHR sign-in matched.', max_length=12),
        ),
        migrations.AddField(
            model_name='historicalehrapprover',
            name='last_matched_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='clinicianlink',
            name='fhir_user',
            field=models.CharField(max_length=500, verbose_name='EHR user (absolute fhirUser URL)'),
        ),
        migrations.AlterField(
            model_name='ehrapprover',
            name='ehr_username',
            field=models.CharField(max_length=500, verbose_name='EHR username, fhirUser or identifier'),
        ),
        migrations.AlterField(
            model_name='historicalclinicianlink',
            name='fhir_user',
            field=models.CharField(max_length=500, verbose_name='EHR user (absolute fhirUser URL)'),
        ),
        migrations.AlterField(
            model_name='historicalehrapprover',
            name='ehr_username',
            field=models.CharField(max_length=500, verbose_name='EHR username, fhirUser or identifier'),
        ),
        migrations.AddConstraint(
            model_name='clinicianlink',
            constraint=models.UniqueConstraint(fields=('tenant', 'environment', 'fhir_user'), name='one_link_per_environment_and_ehr_user'),
        ),
    ]
