/*
 * cases.h
 *	  Counting test cases rather than checks, for the unit test programs.
 *
 *	  A table row or a named check is one test case.  A property checked
 *	  over thousands of random rounds is one test case too, which passes
 *	  when it held in every round: the programs note each round's check
 *	  with UnitProperty() and end the rounds with UnitPropertiesEnd(),
 *	  which prints one line a property (how many checks held, how many
 *	  broke) and adds one passed or failed case a property to the
 *	  program's totals.  So the last line, "N passed, M failed", counts
 *	  cases whatever the number of rounds.
 */
#ifndef UNIT_CASES_H
#define UNIT_CASES_H

#include <stdio.h>
#include <string.h>

#define UNIT_MAX_PROPERTIES 16

typedef struct UnitPropertyCount
{
	const char *name;
	long		held;
	long		broke;
} UnitPropertyCount;

static UnitPropertyCount unit_properties[UNIT_MAX_PROPERTIES];
static int	unit_nproperties = 0;

/*
 * One check of the property name (a string constant); returns ok.  A
 * program with more properties than UNIT_MAX_PROPERTIES counts the extra
 * ones in the last.
 */
static int
UnitProperty(const char *name, int ok)
{
	int			i;

	for (i = 0; i < unit_nproperties; i++)
		if (strcmp(unit_properties[i].name, name) == 0)
			break;
	if (i == unit_nproperties)
	{
		if (unit_nproperties < UNIT_MAX_PROPERTIES)
		{
			unit_properties[i].name = name;
			unit_properties[i].held = unit_properties[i].broke = 0;
			unit_nproperties++;
		}
		else
			i = UNIT_MAX_PROPERTIES - 1;
	}
	if (ok)
		unit_properties[i].held++;
	else
		unit_properties[i].broke++;
	return ok;
}

/*
 * The end of the rounds (rounds_of names them: "rounds", "random texts"):
 * one line a property noted since the last call, each one test case
 * added to *passed or *failed.
 */
static void
UnitPropertiesEnd(const char *rounds_of, int rounds, int *passed, int *failed)
{
	int			i;

	for (i = 0; i < unit_nproperties; i++)
	{
		const UnitPropertyCount *p = &unit_properties[i];

		if (p->broke == 0)
		{
			printf("property \"%s\" held in %ld checks over %d %s\n",
				   p->name, p->held, rounds, rounds_of);
			(*passed)++;
		}
		else
		{
			printf("FAIL property \"%s\" broke in %ld of %ld checks over %d %s\n",
				   p->name, p->broke, p->held + p->broke, rounds, rounds_of);
			(*failed)++;
		}
	}
	unit_nproperties = 0;
}

#endif							/* UNIT_CASES_H */
